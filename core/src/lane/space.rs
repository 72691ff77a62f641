//! Disk space (SPEC §4): intake stops before the spool's filesystem is
//! full, keeping a floor free and room to record a result and a dedup
//! entry for every task the spool holds, and resumes by itself when space
//! returns. Held deliveries are not acked, so the broker's prefetch window
//! closes on its own; what is already spooled goes on (completions,
//! publishes, confirms), which is what frees space again.
//!
//! The spool reports how many bytes it may still use (`SpoolSpace`: free on
//! the filesystem plus what its file holds free for reuse) after commits
//! and now and then; between reports every admitted task counts twice its
//! size (an LMDB page is rewritten, not updated in place).

use crate::output::Event;

use super::Lane;

/// A byte count as an operator reads it: whole units, the largest that
/// keeps it at 1 or more (a small disk is not "0 MiB left").
fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match UNITS.iter().find(|(size, _)| n >= *size) {
        Some((size, unit)) => format!("{} {unit}", n / size),
        None => format!("{n} B"),
    }
}

#[derive(Debug, Default)]
pub(super) struct Space {
    /// Bytes the spool may still use, as last reported.
    available: Option<u64>,
    /// Bytes admitted since that report, counted twice.
    admitted_since: u64,
    /// Why intake waits for disk space, while it does.
    full: Option<String>,
}

impl Lane {
    pub(super) fn on_spool_space(&mut self, available: u64) {
        self.space.available = Some(available);
        self.space.admitted_since = 0;
        self.admit_held();
        if self.space.full.is_some() && self.intake_unheld() {
            self.space.full = None;
            self.refresh_spool_full();
        }
    }

    /// Whether the disk has room for one more task of `bytes`; when it has
    /// not, intake waits and the lane says why.
    pub(super) fn disk_has_room(&mut self, bytes: u64) -> bool {
        let Some(available) = self.space.available else { return true };
        let reserve = (self.inbox.len() as u64 + 1).saturating_mul(self.cfg.result_reserve_bytes);
        let need = self
            .cfg
            .min_free_bytes
            .saturating_add(reserve)
            .saturating_add(self.space.admitted_since)
            .saturating_add(bytes.saturating_mul(2));
        if available >= need {
            return true;
        }
        if self.space.full.is_none() {
            self.space.full = Some(format!(
                "disk space low: {} left for the spool, {} kept free and {} reserved for the results of {} tasks",
                human_bytes(available),
                human_bytes(self.cfg.min_free_bytes),
                human_bytes(reserve),
                self.inbox.len()
            ));
            self.refresh_spool_full();
        }
        false
    }

    /// A task of `bytes` was admitted since the last report.
    pub(super) fn disk_admitted(&mut self, bytes: u64) {
        self.space.admitted_since = self.space.admitted_since.saturating_add(bytes.saturating_mul(2));
    }

    /// Why the spool takes no more tasks right now, if it does not: a
    /// writer that cannot commit, or the disk.
    pub fn spool_full(&self) -> Option<&str> {
        self.spool_stalled.as_deref().or(self.space.full.as_deref())
    }

    /// Reports a change of [`Lane::spool_full`] as an event.
    pub(super) fn refresh_spool_full(&mut self) {
        let now = self.spool_full().map(str::to_owned);
        if now == self.spool_full_reported {
            return;
        }
        match &now {
            Some(reason) => self.emit(Event::SpoolFull { reason: reason.clone() }),
            None => self.emit(Event::SpoolRecovered),
        }
        self.spool_full_reported = now;
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn byte_counts_keep_their_unit_above_one() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(256 << 10), "256 KiB");
        assert_eq!(human_bytes((22 << 20) + 5), "22 MiB");
        assert_eq!(human_bytes(3 << 30), "3 GiB");
    }
}
