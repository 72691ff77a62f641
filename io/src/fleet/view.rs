//! The fleet as an operator sees it: each endpoint's last report, how long
//! ago it was seen, whether it went stale, and the fleet's throughput.

use std::collections::BTreeMap;
use std::fmt;

use super::report::{EndpointState, StatusReport};
use crate::service::{now_ms, FleetRecord, Sample, StoreError, TaskStore};

/// An endpoint silent for this many of its report intervals is stale.
pub const STALE_INTERVALS: u64 = 3;

/// What the fleet table shows for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// What its last report said, and it reports on time.
    Reported(EndpointState),
    /// Silent for [`STALE_INTERVALS`] intervals (killed, hung, cut off);
    /// its last report said the inner state. A `closed` endpoint is never
    /// stale: it said goodbye.
    Stale(EndpointState),
}

impl Shown {
    /// `stale`, or the reported state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Shown::Reported(s) => s.as_str(),
            Shown::Stale(_) => "stale",
        }
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint process of the fleet, judged at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetMember {
    /// Its last report and when it was seen.
    pub record: FleetRecord,
    /// The moment it was judged at, in milliseconds since the Unix epoch.
    pub now_ms: u64,
}

impl FleetMember {
    /// The endpoint's id.
    pub fn endpoint(&self) -> &str {
        &self.record.report.endpoint
    }

    /// Its last report.
    pub fn report(&self) -> &StatusReport {
        &self.record.report
    }

    /// When the endpoint was last heard of: when it sent its last report
    /// (its clock), or when the service took that report from the queue if
    /// that is earlier. A report that waited in `tasklane.status` while no
    /// service drained it must not make a dead endpoint look alive, so
    /// endpoint clocks are expected to agree with the service's (NTP)
    /// within a report interval; an endpoint clock ahead of the service's
    /// changes nothing.
    pub fn last_seen_ms(&self) -> u64 {
        self.record.seen_ms.min(self.report().sent_at_ms)
    }

    /// How long ago it was last heard of ([`FleetMember::last_seen_ms`]).
    pub fn seen_ago_ms(&self) -> u64 {
        self.now_ms.saturating_sub(self.last_seen_ms())
    }

    /// Whether it has been silent for [`STALE_INTERVALS`] of its intervals.
    pub fn is_stale(&self) -> bool {
        let silent_for = STALE_INTERVALS * u64::from(self.report().interval_secs) * 1000;
        self.report().state != EndpointState::Closed && self.seen_ago_ms() > silent_for
    }

    /// What to show for it.
    pub fn state(&self) -> Shown {
        let reported = self.report().state;
        if self.is_stale() {
            Shown::Stale(reported)
        } else {
            Shown::Reported(reported)
        }
    }
}

/// One member as `tasklane fleet --json` and the dashboard's `/fleet.json`
/// show it: `endpoint`, `state` (`stale` or the reported one),
/// `stale`, `last_seen_ms`, `seen_ago_ms`, `received_ms` (when the
/// service took the report from the queue) and the whole `report`.
pub fn member_json(m: &FleetMember) -> serde_json::Value {
    serde_json::json!({
        "endpoint": m.endpoint(),
        "state": m.state().as_str(),
        "stale": m.is_stale(),
        "last_seen_ms": m.last_seen_ms(),
        "received_ms": m.record.seen_ms,
        "seen_ago_ms": m.seen_ago_ms(),
        "report": m.report(),
    })
}

/// Every endpoint that ever reported (until forgotten), ordered by id,
/// judged now: one member per live process of the endpoint (an active one
/// and its standbys), or its last word when none is live ([`visible`]).
pub fn members(store: &TaskStore) -> Result<Vec<FleetMember>, StoreError> {
    let now = now_ms();
    Ok(visible(store.fleet()?.into_iter().map(|record| FleetMember { record, now_ms: now }).collect()))
}

/// Whether `m` is a process that reports on time and has not said
/// goodbye.
fn is_live(m: &FleetMember) -> bool {
    !m.is_stale() && m.report().state != EndpointState::Closed
}

/// What the fleet shows of the process records `all` (ordered by
/// endpoint): for each endpoint, its live processes, the consuming one
/// first (then standbys, by state, then host and pid); when none is live,
/// only the one heard of last (stale, or closed), as a restarted or
/// replaced process leaves its predecessor's record behind until the store
/// drops it.
pub fn visible(all: Vec<FleetMember>) -> Vec<FleetMember> {
    let mut out = Vec::with_capacity(all.len());
    let mut rest = all.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut group = vec![first];
        while let Some(next) = rest.next_if(|m| m.endpoint() == group[0].endpoint()) {
            group.push(next);
        }
        if group.iter().any(is_live) {
            group.retain(is_live);
            group.sort_by(|a, b| {
                let r = |m: &FleetMember| (m.report().state != EndpointState::Consuming, m.report().state);
                let key = |m: &FleetMember| (r(m), m.report().host.clone(), m.report().pid);
                key(a).cmp(&key(b))
            });
            out.extend(group);
        } else if let Some(last) = group.into_iter().max_by_key(FleetMember::last_seen_ms) {
            out.push(last);
        }
    }
    out
}

/// The fleet's throughput, in results completed per second, in `bins`
/// equal bins of the `window_ms` before `now_ms` (oldest first), from the
/// `completed` counters of consecutive reports of each endpoint process
/// (an active process and its standby report under one endpoint id, each
/// counting from its own start). A rate between two reports is spread over
/// the bins their span covers.
pub fn throughput(samples: &[Sample], now_ms: u64, window_ms: u64, bins: usize) -> Vec<f64> {
    let mut out = vec![0.0; bins];
    if bins == 0 || window_ms == 0 {
        return out;
    }
    let start = now_ms.saturating_sub(window_ms);
    let bin_ms = window_ms as f64 / bins as f64;
    let mut by_process: BTreeMap<(&str, u32), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_process.entry((&s.endpoint, s.pid)).or_default().push(s);
    }
    for series in by_process.values_mut() {
        series.sort_by_key(|s| s.sent_at_ms);
        for pair in series.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.completed < a.completed || b.sent_at_ms <= a.sent_at_ms {
                continue; // a new process under a reused pid counts from 0 again
            }
            let rate = (b.completed - a.completed) as f64 * 1000.0 / (b.sent_at_ms - a.sent_at_ms) as f64;
            // Each bin gets the rate for the share of it the span covers.
            let (lo, hi) = (a.sent_at_ms.max(start), b.sent_at_ms.min(now_ms));
            if lo >= hi {
                continue;
            }
            let first = ((lo - start) as f64 / bin_ms) as usize;
            let last = (((hi - start) as f64 / bin_ms).ceil() as usize).min(bins);
            for (i, bin) in out.iter_mut().enumerate().take(last).skip(first) {
                let bin_lo = start as f64 + i as f64 * bin_ms;
                let overlap = (hi as f64).min(bin_lo + bin_ms) - (lo as f64).max(bin_lo);
                if overlap > 0.0 {
                    *bin += rate * overlap / bin_ms;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(endpoint: &str, t: u64, completed: u64, pid: u32) -> Sample {
        Sample { endpoint: endpoint.into(), sent_at_ms: t, completed, pid }
    }

    #[test]
    fn throughput_sums_endpoints_and_skips_restarts() {
        // Two endpoints at 10/s and 5/s over 0..20 s; b restarts at 20 s.
        let samples = vec![
            sample("a", 0, 0, 1),
            sample("a", 10_000, 100, 1),
            sample("a", 20_000, 200, 1),
            sample("b", 0, 0, 2),
            sample("b", 20_000, 100, 2),
            sample("b", 21_000, 3, 9),
            // b's standby (pid 3), reporting between b's reports: it completes nothing.
            sample("b", 5_000, 0, 3),
            sample("b", 15_000, 0, 3),
        ];
        let bins = throughput(&samples, 20_000, 20_000, 4);
        assert_eq!(bins.len(), 4);
        for b in &bins {
            assert!((b - 15.0).abs() < 1e-9, "{bins:?}");
        }
        // The window before any report is empty.
        assert_eq!(throughput(&samples, 100_000, 20_000, 2), vec![0.0, 0.0]);
    }

    #[test]
    fn live_processes_show_and_a_dead_or_closed_predecessor_does_not() {
        let process = |endpoint: &str, state, pid, seen_ago: u64| {
            let mut r = StatusReport::new(&tasklane_core::EndpointId::new(endpoint).unwrap(), state);
            (r.interval_secs, r.pid, r.sent_at_ms) = (1, pid, 100_000 - seen_ago);
            FleetMember { record: FleetRecord { report: r, seen_ms: 100_000 }, now_ms: 100_000 }
        };
        let shown = |all: Vec<FleetMember>| -> Vec<(String, u32, Shown)> {
            visible(all).iter().map(|m| (m.endpoint().to_string(), m.report().pid, m.state())).collect()
        };
        use EndpointState::{Closed, Consuming, Standby};
        // An active process and its standby (listed in pid order) both show,
        // the consuming one first; a dead predecessor does not.
        let all = vec![
            process("a", Standby, 1, 0),
            process("a", Consuming, 2, 500),
            process("a", Consuming, 3, 9_000),
            process("b", Closed, 4, 1_000),
            process("b", Consuming, 5, 0),
        ];
        assert_eq!(
            shown(all),
            [
                ("a".into(), 2, Shown::Reported(Consuming)),
                ("a".into(), 1, Shown::Reported(Standby)),
                ("b".into(), 5, Shown::Reported(Consuming))
            ]
        );
        // None live: the last word only, stale or closed.
        let all = vec![process("c", Consuming, 6, 20_000), process("c", Standby, 7, 9_000)];
        assert_eq!(shown(all), [("c".into(), 7, Shown::Stale(Standby))]);
        let all = vec![process("d", Closed, 8, 60_000), process("d", Consuming, 9, 90_000)];
        assert_eq!(shown(all), [("d".into(), 8, Shown::Reported(Closed))]);
    }

    #[test]
    fn silent_for_three_intervals_is_stale_unless_closed() {
        let id = tasklane_core::EndpointId::new("e").unwrap();
        let mut report = StatusReport::new(&id, EndpointState::Consuming);
        report.interval_secs = 2;
        report.sent_at_ms = 100_000;
        let member = |state, seen_ago: u64| {
            let mut r = report.clone();
            r.state = state;
            FleetMember { record: FleetRecord { report: r, seen_ms: 100_000 }, now_ms: 100_000 + seen_ago }
        };
        assert_eq!(member(EndpointState::Consuming, 6_000).state(), Shown::Reported(EndpointState::Consuming));
        assert_eq!(member(EndpointState::Standby, 6_001).state(), Shown::Stale(EndpointState::Standby));
        assert_eq!(member(EndpointState::Closed, 60_000).state(), Shown::Reported(EndpointState::Closed));
        assert_eq!(Shown::Stale(EndpointState::Consuming).as_str(), "stale");
        // A report that waited 10 s in the queue: as old as when it was sent.
        let mut late = member(EndpointState::Consuming, 0);
        late.record.report.sent_at_ms = 90_000;
        assert_eq!((late.seen_ago_ms(), late.state()), (10_000, Shown::Stale(EndpointState::Consuming)));
        // An endpoint clock ahead of the service's: the service's time counts.
        late.record.report.sent_at_ms = 500_000;
        assert_eq!(late.seen_ago_ms(), 0);
    }
}
