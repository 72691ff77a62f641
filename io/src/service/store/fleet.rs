//! The fleet in the store: the last status report of each endpoint
//! process (an endpoint id may run twice: an active process and a standby,
//! SPEC §4 "Failover") and when the service saw it, throughput samples of the last minutes, and a short
//! log of what the service dead-lettered. Written by
//! [`crate::fleet::Fleet`] as it drains `tasklane.status`, read by
//! `tasklane fleet` and the dashboard.

use heed::RwTxn;
use serde::{Deserialize, Serialize};

use super::{now_ms, StoreError, TaskStore};
use crate::fleet::StatusReport;

/// How long throughput samples are kept.
pub const SAMPLE_WINDOW_MS: u64 = 15 * 60 * 1000;
/// Most samples kept, whatever their age (endpoints with clocks ahead).
const MAX_SAMPLES: u64 = 200_000;
/// How many dead letters the log keeps.
pub const DEAD_LOG_LEN: u64 = 200;

/// An endpoint process's last report, and when the service received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRecord {
    /// The report.
    pub report: StatusReport,
    /// When the service took it from `tasklane.status`, in milliseconds
    /// since the Unix epoch (the service's clock).
    pub seen_ms: u64,
}

/// One report reduced to what the throughput chart needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The reporting endpoint.
    pub endpoint: String,
    /// When the endpoint sent it (its clock).
    pub sent_at_ms: u64,
    /// Its `completed` counter then.
    pub completed: u64,
    /// Its process: a new process starts counting from 0 again.
    pub pid: u32,
}

/// A message the service dead-lettered, as the dashboard lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The queue it was taken from (`results`, `tasklane.status`).
    pub queue: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its `message_id`, if it had a readable one.
    pub message_id: Option<String>,
    /// The `tasklane-reason` label.
    pub reason: String,
    /// The one-line detail (`tasklane-reason-detail`).
    pub detail: String,
}

fn sample_key(sent_at_ms: u64, endpoint: &str) -> Vec<u8> {
    let mut k = sent_at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(endpoint.as_bytes());
    k
}

/// The key of a process's record: endpoint id, host and pid, so that two
/// processes of one endpoint id keep a record each, ordered by endpoint.
/// (Stores written before keyed by the endpoint id alone; such a record is
/// one more process of its endpoint and goes as [`is_superseded`] says.)
fn process_key(r: &StatusReport) -> Vec<u8> {
    let mut k = r.endpoint.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(r.host.as_bytes());
    k.push(0);
    k.extend_from_slice(&r.pid.to_be_bytes());
    k
}

/// Whether `new`, a report of the process that sent `kept`, is an older
/// one (redelivered, or overtaken in the queue): a lower `seq`, sent
/// earlier. A lower `seq` sent later is a new process that got the old
/// one's pid (a container's pid 1 under a fixed host name).
fn is_older(kept: &StatusReport, new: &StatusReport) -> bool {
    new.seq < kept.seq && new.sent_at_ms <= kept.sent_at_ms
}

/// Whether `old`, a record of the same endpoint as a report of a live
/// process just recorded, is no longer worth keeping at `now_ms`: it said
/// `closed`, or it went stale (the process died or was replaced). The
/// fleet view shows the live process instead.
fn is_superseded(old: &FleetRecord, now_ms: u64) -> bool {
    let member = crate::fleet::FleetMember { record: old.clone(), now_ms };
    old.report.state == crate::fleet::EndpointState::Closed || member.is_stale()
}

impl TaskStore {
    /// Records reports with the time each was received, in one transaction,
    /// one record per endpoint process. A report older than the one kept
    /// ([`is_older`]) is dropped from the fleet table but still counts as a
    /// sample. A report of a live process removes the records of other
    /// processes of its endpoint that [`is_superseded`] (a restarted
    /// endpoint leaves no stale ghost behind).
    pub fn record_reports(&self, reports: &[FleetRecord]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut wtxn = self.env.write_txn()?;
        for record in reports {
            let r = &record.report;
            let key = process_key(r);
            let newer = match self.fleet.get(&wtxn, &key)? {
                Some(old) => !is_older(&decode_fleet(&key, old)?.report, r),
                None => true,
            };
            if newer {
                let json = serde_json::to_vec(record).expect("a record serializes");
                self.fleet.put(&mut wtxn, &key, &json)?;
                if !is_superseded(record, now) {
                    self.drop_superseded(&mut wtxn, &r.endpoint, &key, now)?;
                }
            }
            let mut v = r.counter("completed").to_be_bytes().to_vec();
            v.extend_from_slice(&r.pid.to_be_bytes());
            self.samples.put(&mut wtxn, &sample_key(r.sent_at_ms, &r.endpoint), &v)?;
        }
        self.trim_samples(&mut wtxn)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Deletes the records of `endpoint` other than `keep` that
    /// [`is_superseded`] at `now`.
    fn drop_superseded(&self, wtxn: &mut RwTxn, endpoint: &str, keep: &[u8], now: u64) -> Result<(), StoreError> {
        let mut gone = Vec::new();
        for entry in self.fleet.iter(wtxn)? {
            let (k, v) = entry?;
            let record = decode_fleet(k, v)?;
            if k != keep && record.report.endpoint == endpoint && is_superseded(&record, now) {
                gone.push(k.to_vec());
            }
        }
        for k in gone {
            self.fleet.delete(wtxn, &k)?;
        }
        Ok(())
    }

    fn trim_samples(&self, wtxn: &mut RwTxn) -> Result<(), StoreError> {
        let cutoff = now_ms().saturating_sub(SAMPLE_WINDOW_MS).to_be_bytes();
        let mut len = self.samples.len(wtxn)?;
        while let Some((k, _)) = self.samples.first(wtxn)? {
            if k >= cutoff.as_slice() && len <= MAX_SAMPLES {
                break;
            }
            let k = k.to_vec();
            self.samples.delete(wtxn, &k)?;
            len -= 1;
        }
        Ok(())
    }

    /// Every endpoint process's last report, ordered by endpoint id (then
    /// host and pid).
    pub fn fleet(&self) -> Result<Vec<FleetRecord>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for entry in self.fleet.iter(&rtxn)? {
            let (k, v) = entry?;
            out.push(decode_fleet(k, v)?);
        }
        Ok(out)
    }

    /// Forgets the reports of every process of an endpoint (it was
    /// retired); how many records went (0: none were kept). A later report
    /// of that endpoint adds it again.
    pub fn forget_endpoint(&self, endpoint: &str) -> Result<usize, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let mut gone = Vec::new();
        for entry in self.fleet.iter(&wtxn)? {
            let (k, v) = entry?;
            if decode_fleet(k, v)?.report.endpoint == endpoint {
                gone.push(k.to_vec());
            }
        }
        for k in &gone {
            self.fleet.delete(&mut wtxn, k)?;
        }
        wtxn.commit()?;
        Ok(gone.len())
    }

    /// Throughput samples sent at or after `since_ms`, oldest first.
    pub fn samples(&self, since_ms: u64) -> Result<Vec<Sample>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for entry in self.samples.iter(&rtxn)? {
            let (k, v) = entry?;
            let damaged = || StoreError::DamagedFleet(String::from_utf8_lossy(k).into_owned(), "sample".into());
            if k.len() < 8 || v.len() != 12 {
                return Err(damaged());
            }
            let sent_at_ms = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            if sent_at_ms < since_ms {
                continue;
            }
            out.push(Sample {
                endpoint: String::from_utf8_lossy(&k[8..]).into_owned(),
                sent_at_ms,
                completed: u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                pid: u32::from_be_bytes(v[8..].try_into().expect("4 bytes")),
            });
        }
        Ok(out)
    }

    /// The most recent dead letters, newest first.
    pub fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut out = Vec::new();
        for entry in self.dead.rev_iter(&rtxn)?.take(max) {
            let (k, v) = entry?;
            let letter = serde_json::from_slice(v)
                .map_err(|e| StoreError::DamagedFleet(format!("dead letter {k:?}"), e.to_string()))?;
            out.push(letter);
        }
        Ok(out)
    }

    /// Appends to the dead-letter log, forgetting the oldest past
    /// [`DEAD_LOG_LEN`].
    pub(super) fn put_dead(&self, wtxn: &mut RwTxn, letter: &DeadLetter) -> Result<(), StoreError> {
        let next = match self.dead.last(wtxn)? {
            Some((k, _)) => u64::from_be_bytes(k.try_into().map_err(|_| StoreError::Damaged("dead".into()))?) + 1,
            None => 0,
        };
        let json = serde_json::to_vec(letter).expect("a dead letter serializes");
        self.dead.put(wtxn, &next.to_be_bytes(), &json)?;
        while self.dead.len(wtxn)? > DEAD_LOG_LEN {
            let Some((k, _)) = self.dead.first(wtxn)? else { break };
            let k = k.to_vec();
            self.dead.delete(wtxn, &k)?;
        }
        Ok(())
    }
}

fn decode_fleet(k: &[u8], v: &[u8]) -> Result<FleetRecord, StoreError> {
    serde_json::from_slice(v)
        .map_err(|e| StoreError::DamagedFleet(String::from_utf8_lossy(k).into_owned(), e.to_string()))
}
