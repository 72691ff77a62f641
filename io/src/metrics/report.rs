//! [`StatusReport`]: one endpoint's status, counters, spool depths and
//! connection at one moment, as the status file, the metrics endpoint and
//! `tasklane status` show them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tasklane_core::{Counters, Status};

use crate::amqp::ConnectionInfo;
use crate::endpoint::Endpoint;

/// Every status an endpoint can be in, as reports name them.
pub const STATUSES: [&str; 6] = ["connecting", "consuming", "standby", "disconnected", "blocked", "closed"];

/// A snapshot of a running endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Endpoint id.
    pub endpoint: String,
    /// Process id of the endpoint's process.
    pub pid: u32,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub updated_unix_ms: u64,
    /// One of [`STATUSES`].
    pub status: String,
    /// Why, for `disconnected` and `blocked`.
    pub reason: Option<String>,
    /// For `disconnected`: for how long, in seconds.
    pub disconnected_secs: Option<f64>,
    /// The live connection, while connected.
    pub connection: Option<ConnectionInfo>,
    /// Core's counters by name (see [`counter_fields`]).
    pub counters: BTreeMap<String, u64>,
    /// Tasks in the spool's inbox (received, not completed).
    pub spool_inbox: usize,
    /// Results in the spool's outbox (not yet confirmed).
    pub spool_outbox: usize,
    /// Why intake waits for the spool (`spool full: <reason>`), if it does.
    #[serde(default)]
    pub spool_full: Option<String>,
}

/// Core's counters with their names and meanings, in a fixed order.
pub fn counter_fields(c: &Counters) -> [(&'static str, &'static str, u64); 16] {
    [
        ("received", "Deliveries received from the task queue.", c.received),
        ("redelivered", "Deliveries the broker marked redelivered.", c.redelivered),
        ("spooled", "Tasks written to the spool's inbox and committed.", c.spooled),
        ("acked", "Deliveries acked to the broker.", c.acked),
        ("handed_off", "Tasks handed to the application.", c.handed_off),
        ("completed", "Results recorded by the application.", c.completed),
        ("published", "Result publishes issued (republishes count again).", c.published),
        ("confirmed", "Results confirmed by the broker and removed from the outbox.", c.confirmed),
        ("duplicates_dropped", "Deliveries of known tasks that were not handed off again.", c.duplicates_dropped),
        ("rejected", "Deliveries rejected as malformed (dead-lettered).", c.rejected),
        ("returned", "Results the broker returned as unroutable.", c.returned),
        ("nacked", "Results the broker nacked.", c.nacked),
        ("connections", "Connections made (the first and every reconnect).", c.connections),
        ("disconnects", "Connection attempts that failed and sessions that were lost.", c.disconnects),
        ("quarantined", "Deliveries the client cannot decode, moved to tasklane.dead by a poison scan.", c.quarantined),
        ("spool_refused", "Spool writes refused (LMDB errors), recovered from.", c.spool_refused),
    ]
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl StatusReport {
    /// The endpoint as it is now.
    pub fn of(endpoint: &Endpoint) -> Self {
        let status = endpoint.status().borrow().clone();
        let (name, reason, disconnected_secs) = match &status {
            Status::Connecting => ("connecting", None, None),
            Status::Consuming => ("consuming", None, None),
            Status::Standby => ("standby", None, None),
            Status::Disconnected { reason, since } => {
                let lasted = tokio::time::Instant::now().into_std().saturating_duration_since(*since);
                ("disconnected", Some(reason.clone()), Some(lasted.as_secs_f64()))
            }
            Status::Blocked { reason } => ("blocked", Some(reason.clone()), None),
            Status::Closed => ("closed", None, None),
        };
        // A connection that is being given up is not worth showing.
        let connected = matches!(status, Status::Consuming | Status::Standby | Status::Blocked { .. });
        let depths = endpoint.spool_depths();
        Self {
            endpoint: endpoint.id().to_string(),
            pid: std::process::id(),
            updated_unix_ms: unix_ms(SystemTime::now()),
            status: name.to_string(),
            reason,
            disconnected_secs,
            connection: endpoint.connection().filter(|_| connected),
            counters: counter_fields(&endpoint.counters()).iter().map(|(n, _, v)| (n.to_string(), *v)).collect(),
            spool_inbox: depths.inbox,
            spool_outbox: depths.outbox,
            spool_full: endpoint.spool_full(),
        }
    }

    /// How long ago the snapshot was taken.
    pub fn age(&self) -> Duration {
        Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(self.updated_unix_ms))
    }

    /// A counter by name (0 if unknown).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The status with its reason, in one line.
    pub fn status_line(&self) -> String {
        let line = match (&self.reason, self.disconnected_secs) {
            (Some(reason), Some(secs)) => format!("{} for {secs:.0} s: {reason}", self.status),
            (Some(reason), None) => format!("{}: {reason}", self.status),
            _ => self.status.clone(),
        };
        match &self.spool_full {
            Some(full) => format!("{line}; spool full: {full}"),
            None => line,
        }
    }
}
