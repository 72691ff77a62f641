//! The status file: how `tasklane status` (another process) sees a
//! running endpoint. The endpoint rewrites `tasklane-status.json` in its
//! spool directory every [`STATUS_INTERVAL`] and at every status change
//! (write to a temporary file, then rename: readers never see half a file),
//! and once more when it stops.
//!
//! Chosen over asking the metrics address because it needs no network
//! port, works for every endpoint whatever its options, and tells about an
//! endpoint that is gone: a report that stopped being refreshed, or whose
//! process is gone, means the endpoint is not running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::report::StatusReport;
use crate::endpoint::Endpoint;

/// The status file's name inside the spool directory.
pub const STATUS_FILE: &str = "tasklane-status.json";
/// How often a running endpoint refreshes its status file.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// A report older than this comes from an endpoint that no longer runs.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// The status file of the spool in `dir`.
pub fn status_path(dir: &Path) -> PathBuf {
    dir.join(STATUS_FILE)
}

/// Writes `report` to `dir`'s status file, atomically.
pub fn write_status(dir: &Path, report: &StatusReport) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{STATUS_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, status_path(dir))
}

/// Reads `dir`'s status file; `None` if there is none.
pub fn read_status(dir: &Path) -> std::io::Result<Option<StatusReport>> {
    match std::fs::read(status_path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the report comes from an endpoint that runs now: refreshed
/// lately, not closed, and (where `/proc` tells) its process alive.
pub fn is_live(report: &StatusReport) -> bool {
    let proc_dir = Path::new("/proc");
    let process_alive = !proc_dir.exists() || proc_dir.join(report.pid.to_string()).exists();
    report.status != "closed" && report.age() < STALE_AFTER && process_alive
}

/// Keeps an endpoint's status file up to date until stopped.
#[derive(Debug)]
pub struct StatusFile {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl StatusFile {
    /// Starts refreshing the status file in `dir` (the endpoint's spool
    /// directory) for `endpoint`.
    pub fn start(endpoint: Arc<Endpoint>, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut status = endpoint.status();
            loop {
                let report = StatusReport::of(&endpoint);
                if let Err(e) = write_status(&dir, &report) {
                    tracing::warn!(dir = %dir.display(), "cannot write the status file: {e}");
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(STATUS_INTERVAL) => {}
                    changed = status.changed() => if changed.is_err() {
                        // The endpoint is gone: write once more at the interval.
                        tokio::time::sleep(STATUS_INTERVAL).await;
                    },
                }
            }
            if let Err(e) = write_status(&dir, &StatusReport::of(&endpoint)) {
                tracing::warn!(dir = %dir.display(), "cannot write the status file: {e}");
            }
        });
        Self { stop: Some(stop), task }
    }

    /// Writes the status a last time (call after the endpoint's shutdown, so
    /// the file says `closed`) and stops.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}
