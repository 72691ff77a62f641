//! Counters of what a lane did, for status pages and Prometheus.

/// Monotonic counters over a lane's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Deliveries received on a current channel.
    pub received: u64,
    /// Deliveries that carried the broker's `redelivered` flag.
    pub redelivered: u64,
    /// Tasks written to the spool's inbox and committed.
    pub spooled: u64,
    /// Deliveries acked to the broker (counting each delivery a `multiple`
    /// ack covers).
    pub acked: u64,
    /// Tasks handed to the application.
    pub handed_off: u64,
    /// Results recorded by the application.
    pub completed: u64,
    /// Result publishes issued (a republish counts again).
    pub published: u64,
    /// Results confirmed by the broker and removed from the outbox.
    pub confirmed: u64,
    /// Deliveries that repeated a known task and were not handed off again.
    pub duplicates_dropped: u64,
    /// Deliveries rejected as malformed.
    pub rejected: u64,
    /// Results returned by the broker as unroutable.
    pub returned: u64,
    /// Results nacked by the broker.
    pub nacked: u64,
    /// Connections made (the first and every reconnect).
    pub connections: u64,
    /// Connection attempts that failed or sessions that were lost.
    pub disconnects: u64,
    /// Deliveries the client could not decode, moved to `tasklane.dead`
    /// by a poison scan.
    pub quarantined: u64,
    /// Spool writes the spool refused (a bug; see `Event::SpoolRefused`).
    pub spool_refused: u64,
}
