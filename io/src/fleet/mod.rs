//! The service sees its fleet (SPEC §5, "Fleet"): endpoints publish a
//! [`StatusReport`] to exchange `results` with routing key `E.status` on a
//! timer and on every status change; [`Fleet`] drains queue
//! `tasklane.status` into the service's store, checking that each report
//! comes from the endpoint its routing key names; [`members`] tells the
//! last report of each endpoint process (an id running twice, active and
//! standby, has two), when it was seen and whether it went stale; the
//! [`dashboard`] shows it all on a web page.
//!
//! Publishing a report (what an endpoint does, on a channel of its own,
//! without confirms: a report the broker drops costs nothing):
//!
//! ```no_run
//! # async fn demo(channel: &amqprs::channel::Channel) -> Result<(), tasklane_io::amqp::Error> {
//! use tasklane_core::EndpointId;
//! use tasklane_io::fleet::{self, EndpointState, StatusReport};
//! let id = EndpointId::new("ep-1").unwrap();
//! let mut report = StatusReport::new(&id, EndpointState::Consuming);
//! report.seq = 7;
//! report.node = Some("127.0.0.1:5672".into());
//! report.spool.inbox = 3;
//! fleet::publish(channel, &report).await?;
//! # Ok(()) }
//! ```
//!
//! Keeping the fleet (what a service does):
//!
//! ```no_run
//! # async fn demo(conn: amqprs::connection::Connection) -> Result<(), tasklane_io::service::ServiceError> {
//! use std::time::Duration;
//! use tasklane_io::fleet::{members, Fleet};
//! use tasklane_io::service::TaskStore;
//! let store = TaskStore::open("./tasklane-service")?;
//! let mut fleet = Fleet::open(&conn, store.clone()).await?;
//! fleet.drain(Duration::from_millis(300)).await?; // what waits in tasklane.status
//! for m in members(&store)? {
//!     println!("{} {} last seen {} ms ago", m.endpoint(), m.state(), m.seen_ago_ms());
//! }
//! fleet.close().await;
//! # Ok(()) }
//! ```

mod consumer;
pub mod dashboard;
mod report;
mod view;

use amqprs::channel::{BasicPublishArguments, Channel};
use amqprs::{BasicProperties, DELIVERY_MODE_TRANSIENT};
use tasklane_core::RawMessage;

pub use consumer::{Fleet, FleetCounters};
pub use report::{
    counters_by_name, status_key, unix_ms_now, EndpointState, ReportError, SpoolReport, StatusReport, APP_ID,
    CONTENT_TYPE, DEFAULT_INTERVAL_SECS, FORMAT, MAX_REPORT_BYTES,
};
pub use view::{member_json, members, throughput, FleetMember, Shown, STALE_INTERVALS};

use crate::amqp::{self, ConvertError};
use crate::service::RESULTS;

/// Properties of a report's message: its `message_id` and headers,
/// transient, content type `application/json`, app id `tasklane`.
pub fn publish_properties(raw: &RawMessage) -> Result<BasicProperties, ConvertError> {
    let mut props = amqp::publish_properties(raw)?;
    props.with_delivery_mode(DELIVERY_MODE_TRANSIENT).with_content_type(CONTENT_TYPE).with_app_id(APP_ID);
    Ok(props.finish())
}

/// Where a report goes: exchange `results`, routing key `E.status`, not
/// mandatory (a report nobody routes is simply dropped).
pub fn publish_args(report: &StatusReport) -> BasicPublishArguments {
    BasicPublishArguments::new(RESULTS, &report.routing_key()).mandatory(false).finish()
}

/// Publishes `report` on `channel` (no confirm is awaited: select none on
/// that channel). An error means the channel or connection is gone.
pub async fn publish(channel: &Channel, report: &StatusReport) -> Result<(), amqp::Error> {
    let raw = report.encode();
    let props = publish_properties(&raw).expect("a report's id and header are UTF-8");
    channel
        .basic_publish(props, raw.body.to_vec(), publish_args(report))
        .await
        .map_err(|source| amqp::Error::Amqp { op: "basic.publish", source })
}
