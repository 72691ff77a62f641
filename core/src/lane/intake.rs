//! Deliveries on the consuming channel: judge, dedup, spool and hand off,
//! hold under backpressure, and ack in groups once the spool has committed.
//!
//! Each unsettled delivery waits on a [`Gate`]. The ack point advances over
//! the longest prefix of open gates and is sent as one `multiple=true` ack,
//! so a group commit of a hundred tasks costs one ack. Nothing is acked
//! before its task is durable, and no tag is acked on a channel other than
//! the one that issued it: a lost channel takes its unsettled deliveries
//! with it (the broker requeues them).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::ids::{ChannelId, DeliveryTag, WriteSeq};
use crate::message::{decode_task, RawMessage, Task, TaskLimits};
use crate::output::{Amqp, Event, Handoff, Output};
use crate::spool::{SpoolOp, StoredTask};

use super::inbox::Known;
use super::Lane;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Acked once this write is committed.
    Write(WriteSeq),
    /// Acked at the next ack point.
    Open,
    /// Waiting for room in the spool.
    Held,
}

#[derive(Debug, Default)]
pub(super) struct Intake {
    /// The channel deliveries are accepted from.
    channel: Option<ChannelId>,
    /// Shutting down: deliveries are no longer taken (the broker requeues
    /// them when the connection closes); settled ones are still acked.
    closed: bool,
    last_tag: u64,
    unsettled: BTreeMap<u64, Gate>,
    held: VecDeque<(u64, Task)>,
    /// Sabotage only: tags of a lost channel, to be (wrongly) acked later.
    #[cfg(feature = "sabotage")]
    stale: Vec<u64>,
}

impl Intake {
    /// Starts accepting deliveries from `channel`.
    pub(super) fn start(&mut self, channel: ChannelId) {
        let old = std::mem::take(self);
        *self = Self { channel: Some(channel), closed: old.closed, ..Self::default() };
        #[cfg(feature = "sabotage")]
        {
            self.stale = old.stale;
        }
        let _ = old;
    }

    /// Shutdown: take no more deliveries.
    pub(super) fn close(&mut self) {
        self.closed = true;
    }

    /// Whether an ack is still owed for a delivery whose write is issued:
    /// keeping the session lets it go out once the spool commits.
    pub(super) fn owes_acks(&self) -> bool {
        self.channel.is_some() && self.unsettled.values().any(|g| matches!(g, Gate::Write(_)))
    }

    /// The channel is gone: its unsettled deliveries are the broker's again.
    pub(super) fn stop(&mut self) {
        let old = std::mem::take(self);
        self.closed = old.closed;
        #[cfg(feature = "sabotage")]
        {
            self.stale = old.stale;
            self.stale.extend(old.unsettled.keys());
        }
        let _ = old;
    }
}

impl Lane {
    pub(super) fn on_delivery(
        &mut self,
        now: Instant,
        channel: ChannelId,
        tag: u64,
        redelivered: bool,
        message: RawMessage,
    ) {
        if self.intake.channel != Some(channel) || self.intake.closed {
            return; // a late delivery of a channel given up, or shutting down
        }
        if tag <= self.intake.last_tag {
            let detail = format!("delivery tag {tag} after tag {} on the same channel", self.intake.last_tag);
            self.protocol_violation(now, detail);
            return;
        }
        self.intake.last_tag = tag;
        self.counters.received += 1;
        self.counters.redelivered += u64::from(redelivered);
        self.on_first_delivery();
        let limits = TaskLimits { max_body_bytes: self.cfg.max_body_bytes, max_headers: self.cfg.max_headers };
        match decode_task(&message, limits) {
            Err(reason) => {
                self.counters.rejected += 1;
                self.out.push_back(Output::Amqp(Amqp::Reject { tag: DeliveryTag { channel, tag } }));
                let message_id = message.message_id.and_then(|b| String::from_utf8(b).ok());
                self.emit(Event::Rejected { message_id, reason });
            }
            Ok(task) => {
                if self.intake.held.is_empty() && self.admit(tag, &task) {
                    self.advance_acks();
                } else {
                    self.intake.unsettled.insert(tag, Gate::Held);
                    self.intake.held.push_back((tag, task));
                }
            }
        }
    }

    /// Spools `task` or settles it as a duplicate. False when the spool has
    /// no room (nothing changed).
    ///
    /// A task whose result is still in the outbox is a duplicate too, also
    /// when it has left the completed window: running it again would put a
    /// second result for one task id into the outbox, and a return or
    /// confirm of one publish could not say which of the two it meant.
    fn admit(&mut self, tag: u64, task: &Task) -> bool {
        // A task completed before its insert was committed (it was handed off
        // at once) is durable only once its completion is.
        let known = match self.outbox.completing(&task.id) {
            Some(write) => Some(Known::Writing(write)),
            None => self.inbox.known(&task.id, WriteSeq(self.committed)),
        };
        let known = known.or_else(|| self.outbox.holds(&task.id).then_some(Known::Durable));
        let gate = match known {
            Some(known) => {
                self.counters.duplicates_dropped += 1;
                self.emit(Event::DuplicateDropped { task: task.id.clone() });
                match known {
                    Known::Writing(seq) => Gate::Write(seq),
                    Known::Durable => Gate::Open,
                }
            }
            None if self.inbox.has_room(task.body.len() as u64) && self.disk_has_room(task.body.len() as u64) => {
                self.disk_admitted(task.body.len() as u64);
                let seq = WriteSeq(self.issued + 1);
                let meta = self.inbox.insert(seq, &task.id, task.body.len() as u64);
                let written = self.write(SpoolOp::Insert(StoredTask { arrival: meta.arrival, task: task.clone() }));
                debug_assert_eq!(written, seq);
                // Handed off as its write is issued, so the application
                // starts at once instead of after the fsync; the ack waits
                // for the commit (the gate), and so does the result's
                // publish (SPEC §4 "Handoff").
                self.counters.handed_off += 1;
                self.out.push_back(Output::Handoff(Handoff { task: meta, recovered: false }));
                Gate::Write(seq)
            }
            None => return false,
        };
        #[cfg(feature = "sabotage")]
        let gate = if self.cfg.sabotage.ack_before_commit { Gate::Open } else { gate };
        self.intake.unsettled.insert(tag, gate);
        true
    }

    /// Whether no delivery waits for room.
    pub(super) fn intake_unheld(&self) -> bool {
        self.intake.held.is_empty()
    }

    /// Room may have opened in the spool: admit held deliveries in order.
    pub(super) fn admit_held(&mut self) {
        if self.intake.closed {
            return; // shutting down: the broker delivers them again later
        }
        while let Some((tag, task)) = self.intake.held.pop_front() {
            if !self.admit(tag, &task) {
                self.intake.held.push_front((tag, task));
                break;
            }
        }
        self.advance_acks();
    }

    /// Acks, with one `multiple=true` ack, every delivery up to the first
    /// one that still waits.
    pub(super) fn advance_acks(&mut self) {
        let Some(channel) = self.intake.channel else { return };
        let mut upto = None;
        let mut count = 0;
        while let Some((&tag, &gate)) = self.intake.unsettled.first_key_value() {
            let open = match gate {
                Gate::Open => true,
                Gate::Write(seq) => seq.0 <= self.committed,
                Gate::Held => false,
            };
            if !open {
                break;
            }
            self.intake.unsettled.pop_first();
            upto = Some(tag);
            count += 1;
        }
        if let Some(tag) = upto {
            self.counters.acked += count;
            self.out.push_back(Output::Amqp(Amqp::Ack { tag: DeliveryTag { channel, tag }, multiple: true }));
        }
    }
}

#[cfg(feature = "sabotage")]
impl Lane {
    /// Sabotage: acks the tags of a lost channel on the new one, the bug
    /// class of acking tasks nobody processed.
    pub(super) fn ack_stale_tags(&mut self, channel: ChannelId) {
        if !self.cfg.sabotage.ack_stale_tags {
            self.intake.stale.clear();
            return;
        }
        for tag in std::mem::take(&mut self.intake.stale) {
            self.out.push_back(Output::Amqp(Amqp::Ack { tag: DeliveryTag { channel, tag }, multiple: false }));
        }
    }
}
