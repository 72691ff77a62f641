//! The writer thread's loop (see [`super::writer`]): group commit, stall
//! and retry, the free-space probe, and a bounded close.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tasklane_core::{SpoolOp, SpoolWrite};
use tokio::sync::mpsc::UnboundedSender;

use super::store::LmdbSpool;
use super::writer::{Cmd, Shared, SpoolReport, DROP_GRACE};
use super::SpoolError;

/// Most writes in one transaction.
const MAX_BATCH_WRITES: usize = 4096;
/// Most payload bytes in one transaction (at least one write always goes).
/// LMDB holds a transaction's dirty pages in the heap until it commits, so
/// this bounds what a group costs in memory (SPEC §4 "Memory"); 16 MiB
/// takes far longer to write than the commit's fsync costs.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Retry delays while stalled.
const STALL_RETRY_FIRST: Duration = Duration::from_millis(100);
const STALL_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often free space is reported while nothing commits.
const SPACE_EVERY: Duration = Duration::from_secs(1);

fn payload_len(w: &SpoolWrite) -> usize {
    match &w.op {
        SpoolOp::Insert(t) => t.task.body.len(),
        SpoolOp::Complete { result, .. } => result.body.len(),
        SpoolOp::Confirmed { .. } => 0,
    }
}

/// How many writes from the front of `queue` go into the next group.
fn group_len(queue: &VecDeque<SpoolWrite>, cap: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for w in queue.iter().take(cap) {
        bytes += payload_len(w);
        if n > 0 && bytes > MAX_BATCH_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// Free and total bytes of the filesystem holding `dir` (one `statvfs`).
pub fn space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(dir)?;
    Ok((s.f_bavail.saturating_mul(s.f_frsize), s.f_blocks.saturating_mul(s.f_frsize)))
}

struct Writer<'a> {
    spool: LmdbSpool,
    rx: Receiver<Cmd>,
    reports: UnboundedSender<SpoolReport>,
    shared: &'a Shared,
    queue: VecDeque<SpoolWrite>,
    /// Set by a close: when to stop retrying a stalled queue.
    give_up_at: Option<Instant>,
    last_space: Instant,
}

impl Writer<'_> {
    fn take(&mut self, cmd: Result<Cmd, ()>) {
        match cmd {
            Ok(Cmd::Write(w)) => self.queue.push_back(w),
            Ok(Cmd::Close { give_up_at }) => {
                self.give_up_at = Some(self.give_up_at.map_or(give_up_at, |g| g.min(give_up_at)))
            }
            Err(()) if self.give_up_at.is_none() => self.give_up_at = Some(Instant::now() + DROP_GRACE),
            Err(()) => {}
        }
    }

    fn closing(&self) -> bool {
        self.give_up_at.is_some()
    }

    /// Takes what is waiting without blocking.
    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => self.take(Ok(cmd)),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => return self.take(Err(())),
            }
        }
    }

    /// Waits until `until` (or a close's deadline) and reports the free
    /// space every second meanwhile. Returns early when a close comes, and
    /// when a write comes if `on_write`.
    fn wait(&mut self, until: Instant, on_write: bool) {
        loop {
            let until = self.give_up_at.map_or(until, |g| g.min(until));
            let now = Instant::now();
            if now >= self.last_space + SPACE_EVERY {
                self.report_space();
            }
            if now >= until {
                return;
            }
            let next_space = self.last_space + SPACE_EVERY;
            match self.rx.recv_timeout(until.min(next_space).saturating_duration_since(now)) {
                Ok(Cmd::Write(write)) => {
                    self.queue.push_back(write);
                    if on_write {
                        return;
                    }
                }
                Ok(close) => return self.take(Ok(close)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.take(Err(())),
            }
        }
    }

    fn report(&self, r: SpoolReport) {
        let _ = self.reports.send(r);
    }

    fn report_space(&mut self) {
        self.last_space = Instant::now();
        match space(self.spool.dir()) {
            Ok((free_bytes, total_bytes)) => {
                let reusable_bytes = self.spool.reusable_bytes();
                self.report(SpoolReport::Space { free_bytes, total_bytes, reusable_bytes })
            }
            Err(e) => tracing::warn!(dir = %self.spool.dir().display(), "statvfs failed: {e}"),
        }
    }
}

pub(super) fn run(
    spool: LmdbSpool,
    rx: Receiver<Cmd>,
    reports: UnboundedSender<SpoolReport>,
    shared: &Shared,
) -> Result<(), SpoolError> {
    let mut w =
        Writer { spool, rx, reports, shared, queue: VecDeque::new(), give_up_at: None, last_space: Instant::now() };
    w.report_space();
    // A group that fails is split in halves until one fits (the longest
    // prefix that fits still commits, and writes keep their order); only a
    // single write that fails stalls the writer.
    let mut cap = MAX_BATCH_WRITES;
    let mut stall: Option<Duration> = None;
    loop {
        w.drain();
        if w.queue.is_empty() {
            if w.closing() {
                return Ok(());
            }
            w.wait(Instant::now() + Duration::from_secs(3600), true);
            continue;
        }
        let n = group_len(&w.queue, cap);
        match w.spool.apply_batch(&w.queue.make_contiguous()[..n]) {
            Ok(refused) => {
                cap = MAX_BATCH_WRITES;
                let upto = w.queue[n - 1].seq;
                w.queue.drain(..n);
                w.shared.pending.fetch_sub(n, Ordering::SeqCst);
                for (seq, error) in refused {
                    tracing::error!(seq = seq.0, %error, "spool write refused");
                    w.report(SpoolReport::Refused { seq, error });
                }
                if stall.take().is_some() {
                    *w.shared.stall.lock().expect("not poisoned") = None;
                    tracing::info!(dir = %w.spool.dir().display(), "spool writes resumed");
                }
                w.report(SpoolReport::Committed { upto, writes: n });
                w.report_space();
            }
            Err(_) if n > 1 => cap = n / 2,
            Err(e) => {
                let reason = e.to_string();
                let delay = match stall {
                    None => {
                        tracing::error!(dir = %w.spool.dir().display(), %reason, "spool stalled; writes wait");
                        w.report(SpoolReport::Stalled { reason: reason.clone() });
                        STALL_RETRY_FIRST
                    }
                    Some(d) => (d * 2).min(STALL_RETRY_MAX),
                };
                stall = Some(delay);
                *w.shared.stall.lock().expect("not poisoned") = Some(reason.clone());
                if w.give_up_at.is_some_and(|g| Instant::now() >= g) {
                    return Err(SpoolError::Unflushed { writes: w.queue.len(), reason });
                }
                w.wait(Instant::now() + delay, false);
            }
        }
    }
}
