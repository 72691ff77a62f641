//! Results: completion moves a task from the inbox to the outbox in one
//! spool write; once committed, results are published in outbox order under
//! publisher confirms. Only a confirm removes a result. A nack or a return
//! (unroutable) keeps it and schedules a retry with backoff; a lost channel
//! keeps it and publishes it again on the next one.
//!
//! Like the inbox, the outbox keeps no bodies (SPEC §4 "Memory"): an entry
//! is what policy needs (the task it answers, its status, its size, where
//! it is in the publish cycle), keyed by its outbox position. The body goes
//! to the spool in the completing write and is read back from there by the
//! shell for each `Amqp::Publish`, which names the position. So the heap
//! holds no result body beyond the unconfirmed window the shell is
//! publishing, however many results wait (broker down, results
//! unroutable, alarms), and a reopen loads metas only. (A bounded
//! in-core body cache was the alternative; it would save the shell a
//! spool read per publish but adds a second path for the same bytes, and
//! the read is a cheap B-tree lookup in a map already in the page cache.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;

use crate::backoff;
use crate::config::Config;
use crate::error::UsageError;
use crate::idmap::{id_hasher, IdMap};
use crate::ids::{ChannelId, OutboxSeq, PublishTag, TaskId, WriteSeq};
use crate::message::{encode_result_headers, ResultStatus, TaskResult};
use crate::output::{Amqp, Event, Output};
use crate::spool::{SpoolOp, SpoolSnapshot};

use super::Lane;

/// The broker's exchange for results.
pub const RESULTS_EXCHANGE: &str = "results";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The completing write is not committed yet.
    Committing,
    /// Waiting in `ready` or `delayed`.
    Waiting,
    /// Published on the current channel under this confirm tag.
    InFlight { tag: u64, returned: bool },
}

/// What the outbox keeps of a result: no body.
#[derive(Debug)]
struct Entry {
    task: TaskId,
    status: ResultStatus,
    /// Length of its body, in bytes.
    size: u64,
    state: State,
    failures: u32,
}

#[derive(Debug)]
pub(super) struct Outbox {
    entries: BTreeMap<OutboxSeq, Entry>,
    /// Looked up by id, never iterated (its order reaches no output).
    by_task: IdMap<OutboxSeq>,
    committing: VecDeque<(WriteSeq, OutboxSeq)>,
    ready: BTreeSet<OutboxSeq>,
    delayed: BTreeSet<(Instant, OutboxSeq)>,
    /// The publishing channel, once `confirm.select` is done.
    channel: Option<ChannelId>,
    last_tag: u64,
    in_flight: BTreeMap<u64, OutboxSeq>,
    /// Since when a confirm has been awaited without any arriving: the
    /// first publish into an empty in-flight table, or the latest confirm
    /// that left some in flight.
    confirm_wait: Option<Instant>,
    next_seq: u64,
    /// `E.results`, formatted once rather than per publish.
    routing_key: String,
}

impl Outbox {
    pub(super) fn new(cfg: &Config, snap: &SpoolSnapshot) -> Self {
        let mut outbox = Self {
            entries: BTreeMap::new(),
            by_task: IdMap::with_hasher(id_hasher(cfg.seed)),
            committing: VecDeque::new(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            channel: None,
            last_tag: 0,
            in_flight: BTreeMap::new(),
            confirm_wait: None,
            next_seq: snap.next_outbox_seq().0,
            routing_key: cfg.endpoint.result_key(),
        };
        for r in &snap.outbox {
            outbox.by_task.insert(r.task.clone(), r.seq);
            let entry =
                Entry { task: r.task.clone(), status: r.status, size: r.size, state: State::Waiting, failures: 0 };
            outbox.entries.insert(r.seq, entry);
            outbox.ready.insert(r.seq);
        }
        outbox
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the outbox holds a result of `task`.
    pub(super) fn holds(&self, task: &TaskId) -> bool {
        self.by_task.contains_key(task)
    }

    /// The write recording `task`'s result, while it is not committed.
    pub(super) fn completing(&self, task: &TaskId) -> Option<WriteSeq> {
        let seq = self.by_task.get(task)?;
        self.committing.iter().find(|(_, s)| s == seq).map(|(write, _)| *write)
    }

    /// Results whose completing write is now committed become publishable.
    pub(super) fn committed(&mut self, upto: WriteSeq) {
        while self.committing.front().is_some_and(|(w, _)| *w <= upto) {
            let (_, seq) = self.committing.pop_front().expect("front checked");
            if let Some(e) = self.entries.get_mut(&seq) {
                e.state = State::Waiting;
                self.ready.insert(seq);
            }
        }
    }

    /// Publishing may start on `channel` (confirm tags count from 1).
    pub(super) fn start(&mut self, channel: ChannelId) {
        self.channel = Some(channel);
        self.last_tag = 0;
    }

    /// The publishing channel is gone: what was in flight is published again
    /// on the next one, at once and in order.
    pub(super) fn stop(&mut self) {
        self.channel = None;
        self.last_tag = 0;
        self.confirm_wait = None;
        for (_, seq) in std::mem::take(&mut self.in_flight) {
            if let Some(e) = self.entries.get_mut(&seq) {
                e.state = State::Waiting;
                self.ready.insert(seq);
            }
        }
    }

    pub(super) fn channel(&self) -> Option<ChannelId> {
        self.channel
    }

    /// Since when publishes have waited for a confirm, if any are in flight.
    pub(super) fn confirm_wait(&self) -> Option<Instant> {
        self.confirm_wait
    }

    /// The next confirm tag, for a publish that is not a result (a status
    /// report): the broker numbers it, nothing waits for its confirm.
    pub(super) fn take_tag(&mut self) -> u64 {
        self.last_tag += 1;
        self.last_tag
    }

    /// The earliest delayed retry.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.delayed.first().map(|(at, _)| *at)
    }
}

impl Lane {
    /// A result may be recorded only for a task handed off and not completed.
    pub(super) fn check_complete(&self, task: &TaskId) -> Result<(), UsageError> {
        // Every inbox task is handed off, its insert committed or not: a
        // result may be recorded at once (its publish waits for both writes).
        if self.inbox.contains(task) {
            Ok(())
        } else {
            Err(UsageError::UnknownTask(task.clone()))
        }
    }

    pub(super) fn on_complete(&mut self, task: TaskId, status: ResultStatus, body: Bytes) {
        let size = body.len() as u64;
        let forget = self.inbox.complete(&task, size);
        let seq = OutboxSeq(self.outbox.next_seq);
        self.outbox.next_seq += 1;
        self.counters.completed += 1;
        self.outbox.by_task.insert(task.clone(), seq);
        self.outbox
            .entries
            .insert(seq, Entry { task: task.clone(), status, size, state: State::Committing, failures: 0 });
        // The body goes to the spool only: the outbox keeps none.
        let write = self.write(SpoolOp::Complete { seq, result: TaskResult { task, status, body }, forget });
        self.outbox.committing.push_back((write, seq));
        // The result may be smaller than the task: room for held deliveries.
        self.admit_held();
    }

    /// Publishes what is due, in outbox order, up to the unconfirmed limit.
    pub(super) fn pump(&mut self, now: Instant) {
        let Some(channel) = self.outbox.channel else { return };
        if self.is_blocked() {
            return;
        }
        while let Some(&(at, seq)) = self.outbox.delayed.first() {
            if at > now {
                break;
            }
            self.outbox.delayed.pop_first();
            self.outbox.ready.insert(seq);
        }
        while self.outbox.in_flight.len() < self.cfg.max_unconfirmed {
            let Some(seq) = self.outbox.ready.pop_first() else { break };
            let Some(entry) = self.outbox.entries.get_mut(&seq) else { continue };
            self.outbox.last_tag += 1;
            let tag = self.outbox.last_tag;
            entry.state = State::InFlight { tag, returned: false };
            if self.outbox.in_flight.is_empty() {
                self.outbox.confirm_wait = Some(now);
            }
            self.outbox.in_flight.insert(tag, seq);
            self.counters.published += 1;
            let message = encode_result_headers(&self.cfg.endpoint, &entry.task, entry.status);
            self.out.push_back(Output::Amqp(Amqp::Publish {
                tag: PublishTag { channel, seq: tag },
                exchange: RESULTS_EXCHANGE,
                routing_key: self.outbox.routing_key.clone(),
                result: seq,
                message,
            }));
            #[cfg(feature = "sabotage")]
            if self.cfg.sabotage.drop_result_before_confirm {
                self.confirm_entry(seq);
            }
        }
    }

    /// The tags a confirm covers, removed from the in-flight table; `None`
    /// when the broker confirmed a tag never published (protocol violation).
    fn take_confirmed(&mut self, channel: ChannelId, tag: u64, multiple: bool) -> Option<BTreeMap<u64, OutboxSeq>> {
        if self.outbox.channel != Some(channel) {
            return Some(BTreeMap::new()); // a channel already given up
        }
        if tag > self.outbox.last_tag || tag == 0 {
            return None;
        }
        if multiple {
            // One split instead of a removal per tag: a `multiple` confirm
            // often covers hundreds of publishes.
            let rest = tag.checked_add(1).map(|next| self.outbox.in_flight.split_off(&next)).unwrap_or_default();
            return Some(std::mem::replace(&mut self.outbox.in_flight, rest));
        }
        Some(self.outbox.in_flight.remove(&tag).map(|seq| BTreeMap::from([(tag, seq)])).unwrap_or_default())
    }

    /// A confirm (ack or nack) arrived at `now` for some of what is in
    /// flight: the broker is answering.
    fn confirms_flow(&mut self, now: Instant) {
        self.outbox.confirm_wait = (!self.outbox.in_flight.is_empty()).then_some(now);
        self.end_confirm_stall(now);
    }

    pub(super) fn on_publish_ack(&mut self, now: Instant, channel: ChannelId, tag: u64, multiple: bool) {
        let Some(covered) = self.take_confirmed(channel, tag, multiple) else {
            let detail = format!("publisher ack for tag {tag}, only {} published", self.outbox.last_tag);
            return self.protocol_violation(now, detail);
        };
        if !covered.is_empty() {
            self.session_proved_healthy();
            self.publishing_proved_healthy();
            self.confirms_flow(now);
        }
        for (_, seq) in covered {
            let returned =
                matches!(self.outbox.entries.get(&seq).map(|e| e.state), Some(State::InFlight { returned: true, .. }));
            if returned {
                self.retry_later(now, seq);
            } else {
                self.confirm_entry(seq);
            }
        }
        self.admit_held();
        self.pump(now);
    }

    pub(super) fn on_publish_nack(&mut self, now: Instant, channel: ChannelId, tag: u64, multiple: bool) {
        let Some(covered) = self.take_confirmed(channel, tag, multiple) else {
            let detail = format!("publisher nack for tag {tag}, only {} published", self.outbox.last_tag);
            return self.protocol_violation(now, detail);
        };
        if !covered.is_empty() {
            self.confirms_flow(now);
        }
        for (_, seq) in covered {
            self.counters.nacked += 1;
            if let Some(e) = self.outbox.entries.get(&seq) {
                let task = e.task.clone();
                self.emit(Event::ResultNacked { task });
            }
            self.retry_later(now, seq);
        }
        self.pump(now);
    }

    pub(super) fn on_returned(&mut self, channel: ChannelId, message_id: Option<Vec<u8>>, code: u16, text: String) {
        if self.outbox.channel != Some(channel) {
            return;
        }
        let Some(task) = message_id.and_then(|b| String::from_utf8(b).ok()).and_then(|s| TaskId::new(s).ok()) else {
            return; // not one of ours: nothing to keep or retry
        };
        let Some(&seq) = self.outbox.by_task.get(&task) else { return };
        if let Some(Entry { state: State::InFlight { returned, .. }, .. }) = self.outbox.entries.get_mut(&seq) {
            *returned = true;
            self.counters.returned += 1;
            self.emit(Event::ResultReturned { task, code, text });
        }
    }

    /// The broker has the result: remove it from the outbox, durably.
    fn confirm_entry(&mut self, seq: OutboxSeq) {
        let Some(entry) = self.outbox.entries.remove(&seq) else { return };
        self.outbox.by_task.remove(&entry.task);
        self.outbox.ready.remove(&seq);
        self.counters.confirmed += 1;
        self.inbox.result_confirmed(entry.size);
        self.write(SpoolOp::Confirmed { seq });
    }

    fn retry_later(&mut self, now: Instant, seq: OutboxSeq) {
        let Some(e) = self.outbox.entries.get_mut(&seq) else { return };
        let at = now + backoff::delay(self.cfg.republish, e.failures, &mut self.rng);
        e.failures = e.failures.saturating_add(1);
        e.state = State::Waiting;
        self.outbox.delayed.insert((at, seq));
    }

    /// When a delayed retry is due, if publishing is possible at all.
    pub(super) fn outbox_deadline(&self) -> Option<Instant> {
        if self.outbox.channel().is_none() || self.is_blocked() {
            return None;
        }
        self.outbox.next_retry()
    }

    pub(super) fn stop_publishing(&mut self) {
        self.outbox.stop();
    }
}
