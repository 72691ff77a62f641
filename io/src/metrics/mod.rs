//! Observability of a running endpoint beyond its `tracing` spans and
//! events: a [`StatusReport`] (status, counters, spool depths, connection),
//! served as Prometheus (OpenMetrics) text by [`MetricsServer`] and written to a status
//! file by [`StatusFile`] for `tasklane status`.
//!
//! ```no_run
//! # async fn demo(endpoint: std::sync::Arc<tasklane_io::endpoint::Endpoint>) -> std::io::Result<()> {
//! use tasklane_io::metrics::{MetricsServer, StatusFile};
//! let metrics = MetricsServer::start("127.0.0.1:9464".parse().unwrap(), endpoint.clone()).await?;
//! let status = StatusFile::start(endpoint.clone(), "/var/lib/ep-1");
//! // ... run, then:
//! endpoint.shutdown().await;
//! status.stop().await; // the file now says "closed"
//! metrics.stop();
//! # Ok(()) }
//! ```

mod prometheus;
mod report;
mod status_file;

pub use prometheus::{render, MetricsListener, MetricsServer};
pub use report::{counter_fields, StatusReport, STATUSES};
pub use status_file::{
    is_live, read_status, status_path, write_status, StatusFile, STALE_AFTER, STATUS_FILE, STATUS_INTERVAL,
};
