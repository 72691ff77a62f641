//! Deliberately broken endpoint variants, to prove that the oracles bite
//! (TigerBeetle keeps a canary that must fail). They switch on core's
//! `sabotage` bugs, which exist only when core is built with that feature:
//! in this crate's own tests, or with `--features sabotage`.

use std::fmt;
use std::str::FromStr;

/// One deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sabotage {
    /// Ack a delivery before its spool write is committed.
    AckBeforeCommit,
    /// After a reconnect, ack the old channel's tags on the new channel.
    AckStaleTags,
    /// Drop a result from the outbox when it is published, not confirmed.
    DropResultBeforeConfirm,
    /// Never ask for an exclusive consumer (in exclusive mode, where
    /// nothing else keeps a duplicate endpoint out).
    NeverExclusive,
}

impl Sabotage {
    pub const ALL: [Sabotage; 4] = [
        Sabotage::AckBeforeCommit,
        Sabotage::AckStaleTags,
        Sabotage::DropResultBeforeConfirm,
        Sabotage::NeverExclusive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sabotage::AckBeforeCommit => "ack-before-commit",
            Sabotage::AckStaleTags => "ack-stale-tags",
            Sabotage::DropResultBeforeConfirm => "drop-result-before-confirm",
            Sabotage::NeverExclusive => "never-exclusive",
        }
    }

    /// The invariants expected to catch it.
    pub fn caught_by(self) -> &'static [&'static str] {
        match self {
            Sabotage::AckBeforeCommit => &["no_ack_before_durable"],
            // A stale tag is either unknown on the new channel (the broker
            // refuses it) or names another, not yet spooled, delivery.
            Sabotage::AckStaleTags => &["no_stale_tag_ack", "no_ack_before_durable"],
            Sabotage::DropResultBeforeConfirm => &["no_result_dropped_before_confirm"],
            Sabotage::NeverExclusive => &["at_most_one_consumer"],
        }
    }

    /// Switches the bug on in core's configuration.
    #[cfg(any(test, feature = "sabotage"))]
    pub(crate) fn apply(self, cfg: &mut tasklane_core::Config) -> Result<(), String> {
        let s = &mut cfg.sabotage;
        match self {
            Sabotage::AckBeforeCommit => s.ack_before_commit = true,
            Sabotage::AckStaleTags => s.ack_stale_tags = true,
            Sabotage::DropResultBeforeConfirm => s.drop_result_before_confirm = true,
            Sabotage::NeverExclusive => s.never_exclusive = true,
        }
        Ok(())
    }

    #[cfg(not(any(test, feature = "sabotage")))]
    pub(crate) fn apply(self, _cfg: &mut tasklane_core::Config) -> Result<(), String> {
        Err("sabotage needs a build with `--features sabotage`".into())
    }
}

impl fmt::Display for Sabotage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sabotage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Sabotage::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            let names: Vec<_> = Sabotage::ALL.iter().map(|v| v.name()).collect();
            format!("unknown sabotage {s:?}; one of {}", names.join(", "))
        })
    }
}
