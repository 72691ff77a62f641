//! The status report: the message every endpoint publishes to the service
//! on a timer and on every status change (SPEC §4, "Observability"), and
//! the one rule that decides whether a message on `tasklane.status` is one.
//!
//! Wire format (format 1), so that a service written with any AMQP client
//! can read it: exchange `results`, routing key `E.status`, transient, not
//! mandatory; `message_id` `E.status.<seq>`, header `tasklane-endpoint: E`,
//! content type `application/json`, app id `tasklane`; the body is the JSON
//! object [`StatusReport`] serializes to.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tasklane_core::message::ENDPOINT_HEADER;
use tasklane_core::{Counters, EndpointId, HeaderValue, RawMessage, Report, Status};

/// The format number this code writes and reads.
pub const FORMAT: u32 = 1;
/// The interval between two reports when the endpoint is not told another.
pub const DEFAULT_INTERVAL_SECS: u32 = 10;
/// Largest report body accepted: a report is a few hundred bytes; anything
/// near this is not one.
pub const MAX_REPORT_BYTES: usize = 64 << 10;
/// Content type of a report.
pub const CONTENT_TYPE: &str = "application/json";
/// App id of a report.
pub const APP_ID: &str = "tasklane";

/// The routing key endpoint `endpoint` publishes its reports with.
pub fn status_key(endpoint: &EndpointId) -> String {
    format!("{endpoint}.status")
}

/// What an endpoint says it is doing (core's [`Status`], by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Opening a connection.
    Connecting,
    /// Consuming its task queue.
    Consuming,
    /// Connected, waiting as a standby (another endpoint of the same id consumes).
    Standby,
    /// Without a connection; the report's `reason` says why.
    Disconnected,
    /// The broker blocks the connection; the report's `reason` says why.
    Blocked,
    /// Shut down (the last report of a process).
    Closed,
}

impl EndpointState {
    /// Every state, in the order dashboards list them.
    pub const ALL: [EndpointState; 6] = [
        EndpointState::Connecting,
        EndpointState::Consuming,
        EndpointState::Standby,
        EndpointState::Disconnected,
        EndpointState::Blocked,
        EndpointState::Closed,
    ];

    /// The state's name on the wire: `consuming`, `standby`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Connecting => "connecting",
            EndpointState::Consuming => "consuming",
            EndpointState::Standby => "standby",
            EndpointState::Disconnected => "disconnected",
            EndpointState::Blocked => "blocked",
            EndpointState::Closed => "closed",
        }
    }

    /// The state of core's `status`, with the reason it carries.
    pub fn of(status: &Status) -> (Self, Option<String>) {
        match status {
            Status::Connecting => (EndpointState::Connecting, None),
            Status::Consuming => (EndpointState::Consuming, None),
            Status::Standby => (EndpointState::Standby, None),
            Status::Disconnected { reason, .. } => (EndpointState::Disconnected, Some(reason.clone())),
            Status::Blocked { reason } => (EndpointState::Blocked, Some(reason.clone())),
            Status::Closed => (EndpointState::Closed, None),
        }
    }
}

impl fmt::Display for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The spool as a report shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolReport {
    /// Tasks in the inbox (received, not completed).
    pub inbox: u64,
    /// Results in the outbox (not confirmed yet).
    pub outbox: u64,
    /// Why intake is paused (spool full, disk space low), or `None`.
    pub full: Option<String>,
}

/// One endpoint's status report (format 1). Every field is on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The endpoint's id; must match the routing key.
    pub endpoint: String,
    /// What the endpoint is doing.
    pub state: EndpointState,
    /// Why, for `disconnected` and `blocked`.
    pub reason: Option<String>,
    /// Spool depths and whether intake is paused.
    pub spool: SpoolReport,
    /// The broker address in use, `host:port`, or `None` without a connection.
    pub node: Option<String>,
    /// Core's counters by name (`received`, `completed`, ...). Readers keep
    /// names they do not know, so counters can be added.
    pub counters: BTreeMap<String, u64>,
    /// The endpoint's tasklane version.
    pub version: String,
    /// When the endpoint sent it, in milliseconds since the Unix epoch (its
    /// clock, not the service's).
    pub sent_at_ms: u64,
    /// How often the endpoint reports; silent for 3 intervals is stale.
    pub interval_secs: u32,
    /// Increases with every report of one endpoint process.
    pub seq: u64,
    /// The endpoint's process id.
    pub pid: u32,
    /// The endpoint's host name.
    pub host: String,
}

/// Why a message on `tasklane.status` is not a status report. It is
/// dead-lettered with [`ReportError::label`] in `tasklane-reason` and the
/// one-line [`Display`](fmt::Display) in `tasklane-reason-detail`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The routing key is not `E.status` of a valid endpoint id.
    #[error("routing key {0:?} is not <endpoint>.status")]
    BadRoutingKey(String),
    /// The body is not a report: not JSON, a field missing or of the
    /// wrong type, an unknown state, too large, or another format.
    #[error("not a status report: {0}")]
    Invalid(String),
    /// The report (or its `tasklane-endpoint` header) names another
    /// endpoint than its routing key: spoofed or misrouted.
    #[error("report for endpoint {named:?} sent with routing key of {sender}")]
    NotOwner {
        /// The endpoint the routing key names.
        sender: String,
        /// The endpoint the report or header names.
        named: String,
    },
}

impl ReportError {
    /// A short stable label for the dead-letter reason header.
    pub fn label(&self) -> &'static str {
        match self {
            ReportError::BadRoutingKey(_) => "bad-routing-key",
            ReportError::Invalid(_) => "bad-report",
            ReportError::NotOwner { .. } => "not-owner",
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `counters` by name, as a report carries them.
pub fn counters_by_name(c: &Counters) -> BTreeMap<String, u64> {
    crate::metrics::counter_fields(c).iter().map(|(name, _, v)| (name.to_string(), *v)).collect()
}

/// Quotes `s` for a one-line reason, at most 80 characters of it.
fn quoted(s: &str) -> String {
    s.chars().take(80).collect::<String>().escape_debug().to_string()
}

impl StatusReport {
    /// A report of `endpoint` in `state`, sent now by this process: version,
    /// pid and host of this process, [`DEFAULT_INTERVAL_SECS`], `seq` 0,
    /// empty spool and counters, no node. Set the rest through the fields.
    pub fn new(endpoint: &EndpointId, state: EndpointState) -> Self {
        Self {
            format: FORMAT,
            endpoint: endpoint.to_string(),
            state,
            reason: None,
            spool: SpoolReport::default(),
            node: None,
            counters: BTreeMap::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            sent_at_ms: unix_ms_now(),
            interval_secs: DEFAULT_INTERVAL_SECS,
            seq: 0,
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
        }
    }

    /// The report of a lane's [`Report`] (`Amqp::PublishReport`), sent now
    /// by this process, connected to broker `node` (`host:port`).
    pub fn of_lane(report: &Report, node: Option<String>) -> Self {
        let (state, reason) = EndpointState::of(&report.status);
        let mut r = Self::new(&report.endpoint, state);
        r.reason = reason;
        r.spool =
            SpoolReport { inbox: report.inbox as u64, outbox: report.outbox as u64, full: report.spool_full.clone() };
        r.node = node;
        r.counters = counters_by_name(&report.counters);
        // Whole seconds on the wire, rounded up: never 0, never early.
        let millis = report.interval.as_millis().max(1);
        r.interval_secs = u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX);
        r.seq = report.seq;
        r
    }

    /// A counter by name (0 if the report has none of that name).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The routing key of this report, `E.status`.
    pub fn routing_key(&self) -> String {
        format!("{}.status", self.endpoint)
    }

    /// The message to publish: `message_id` `E.status.<seq>`, header
    /// `tasklane-endpoint`, JSON body. Publish it with
    /// [`super::publish_properties`] (transient, content type, app id) to
    /// exchange `results` under [`StatusReport::routing_key`].
    pub fn encode(&self) -> RawMessage {
        RawMessage {
            message_id: Some(format!("{}.status.{}", self.endpoint, self.seq).into_bytes()),
            headers: vec![(ENDPOINT_HEADER.to_string(), HeaderValue::Str(self.endpoint.as_bytes().to_vec()))],
            body: Bytes::from(serde_json::to_vec(self).expect("a report serializes")),
        }
    }

    /// The report in a message that arrived with `routing_key`, checked:
    /// the key is `E.status` of a valid id, the body a format-1 report of
    /// at most [`MAX_REPORT_BYTES`] that names `E`, and the
    /// `tasklane-endpoint` header, when present, names `E` too.
    pub fn decode(routing_key: &str, raw: &RawMessage) -> Result<StatusReport, ReportError> {
        let sender = routing_key
            .strip_suffix(".status")
            .and_then(|e| EndpointId::new(e).ok())
            .ok_or_else(|| ReportError::BadRoutingKey(quoted(routing_key)))?;
        if raw.body.len() > MAX_REPORT_BYTES {
            let size = raw.body.len();
            return Err(ReportError::Invalid(format!("{size} bytes, at most {MAX_REPORT_BYTES}")));
        }
        let report: StatusReport = serde_json::from_slice(&raw.body).map_err(|e| {
            let line = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            ReportError::Invalid(line.chars().take(200).collect())
        })?;
        if report.format != FORMAT {
            return Err(ReportError::Invalid(format!("format {}, this service reads {FORMAT}", report.format)));
        }
        if report.interval_secs == 0 {
            return Err(ReportError::Invalid("interval_secs is 0".into()));
        }
        if report.endpoint != sender.as_str() {
            return Err(ReportError::NotOwner { sender: sender.to_string(), named: quoted(&report.endpoint) });
        }
        match raw.headers.iter().find(|(k, _)| k == ENDPOINT_HEADER).map(|(_, v)| v) {
            None => {}
            Some(HeaderValue::Str(named)) if named.as_slice() == sender.as_str().as_bytes() => {}
            Some(HeaderValue::Str(named)) => {
                let named = quoted(&String::from_utf8_lossy(named));
                return Err(ReportError::NotOwner { sender: sender.to_string(), named });
            }
            Some(_) => return Err(ReportError::Invalid(format!("header {ENDPOINT_HEADER} is not a string"))),
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        let e = EndpointId::new("ep-1").unwrap();
        let mut r = StatusReport::new(&e, EndpointState::Disconnected);
        r.reason = Some("connection refused".into());
        r.spool = SpoolReport { inbox: 3, outbox: 1, full: Some("disk space low".into()) };
        r.counters = counters_by_name(&Counters { completed: 7, ..Default::default() });
        r.seq = 42;
        r
    }

    #[test]
    fn encode_and_decode_round_trip_with_the_documented_properties() {
        let r = report();
        let raw = r.encode();
        assert_eq!(raw.message_id.as_deref(), Some(b"ep-1.status.42".as_ref()));
        assert_eq!(raw.headers, vec![("tasklane-endpoint".into(), HeaderValue::Str(b"ep-1".to_vec()))]);
        assert_eq!(StatusReport::decode("ep-1.status", &raw), Ok(r.clone()));
        let json: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(json["format"], 1);
        assert_eq!(json["state"], "disconnected");
        assert_eq!(json["spool"], serde_json::json!({"inbox": 3, "outbox": 1, "full": "disk space low"}));
        assert_eq!(json["counters"]["completed"], 7);
        assert_eq!(json["counters"].as_object().unwrap().len(), 16);
        assert_eq!(json["node"], serde_json::Value::Null);
        assert_eq!(json["interval_secs"], 10);
        assert_eq!(r.counter("completed"), 7);
    }

    #[test]
    fn unknown_counters_are_kept_and_unknown_states_refused() {
        let mut json: serde_json::Value = serde_json::from_slice(&report().encode().body).unwrap();
        json["counters"]["future_counter"] = 5.into();
        let raw = RawMessage { body: Bytes::from(json.to_string()), ..Default::default() };
        assert_eq!(StatusReport::decode("ep-1.status", &raw).unwrap().counter("future_counter"), 5);
        json["state"] = "dancing".into();
        let raw = RawMessage { body: Bytes::from(json.to_string()), ..Default::default() };
        let e = StatusReport::decode("ep-1.status", &raw).unwrap_err();
        assert_eq!(e.label(), "bad-report");
        assert!(e.to_string().contains("dancing"), "{e}");
    }

    #[test]
    fn mismatches_and_garbage_are_refused_with_one_line_reasons() {
        let raw = report().encode();
        let e = StatusReport::decode("ep-2.status", &raw).unwrap_err();
        assert_eq!(e, ReportError::NotOwner { sender: "ep-2".into(), named: "ep-1".into() });
        let mut header = raw.clone();
        header.headers[0].1 = HeaderValue::Str(b"ep-9".to_vec());
        assert_eq!(StatusReport::decode("ep-1.status", &header).unwrap_err().label(), "not-owner");
        assert_eq!(StatusReport::decode("ep-1.results", &raw).unwrap_err().label(), "bad-routing-key");
        assert_eq!(StatusReport::decode("a b.status", &raw).unwrap_err().label(), "bad-routing-key");
        let garbage = RawMessage { body: Bytes::from_static(b"{\"format\": 1,\n\"x\""), ..Default::default() };
        let e = StatusReport::decode("ep-1.status", &garbage).unwrap_err();
        assert_eq!(e.label(), "bad-report");
        assert!(!e.to_string().contains('\n'));
        let mut v2 = report();
        v2.format = 2;
        let e = StatusReport::decode("ep-1.status", &v2.encode()).unwrap_err();
        assert_eq!(e.to_string(), "not a status report: format 2, this service reads 1");
        let big = RawMessage { body: Bytes::from(vec![b' '; MAX_REPORT_BYTES + 1]), ..Default::default() };
        assert_eq!(StatusReport::decode("ep-1.status", &big).unwrap_err().label(), "bad-report");
    }

    #[test]
    fn a_lane_report_fills_every_field() {
        let e = EndpointId::new("ep-1").unwrap();
        let lane = Report {
            endpoint: e.clone(),
            seq: 7,
            status: Status::Blocked { reason: "memory alarm".into() },
            counters: Counters { received: 5, completed: 4, ..Default::default() },
            inbox: 2,
            outbox: 1,
            spool_full: Some("disk space low".into()),
            interval: std::time::Duration::from_millis(1500),
        };
        let r = StatusReport::of_lane(&lane, Some("127.0.0.1:5672".into()));
        assert_eq!((r.state, r.reason.as_deref()), (EndpointState::Blocked, Some("memory alarm")));
        assert_eq!(r.spool, SpoolReport { inbox: 2, outbox: 1, full: Some("disk space low".into()) });
        assert_eq!((r.counter("received"), r.counter("completed")), (5, 4));
        assert_eq!((r.interval_secs, r.seq, r.node.as_deref()), (2, 7, Some("127.0.0.1:5672")));
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
        assert!(r.sent_at_ms > 1_700_000_000_000);
        assert_eq!(StatusReport::decode("ep-1.status", &r.encode()), Ok(r));
    }

    #[test]
    fn states_follow_core_statuses() {
        let d = Status::Disconnected { reason: "gone".into(), since: std::time::Instant::now() };
        assert_eq!(EndpointState::of(&d), (EndpointState::Disconnected, Some("gone".into())));
        assert_eq!(EndpointState::of(&Status::Standby), (EndpointState::Standby, None));
        let names: Vec<&str> = EndpointState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, crate::metrics::STATUSES);
    }
}
