//! The simulation's oracles: the safety invariants that need the broker's
//! view or several hosts' (the broker's event log and snapshots, each
//! endpoint's durable spool, the service's records), checked after every
//! step, and the liveness condition of the heal phase.
//!
//! The invariants of a single lane are not here: core's auditor
//! (`tasklane_core::audit`) checks them inside each endpoint's driver, as
//! it does in every other test layer, and its violations arrive as
//! endpoint records ([`lane_invariants`]).
//!
//! Each invariant is one function; [`Oracle::check`] feeds them what is new
//! since the last step, so a step costs what happened in it.

use std::collections::BTreeSet;

use tasklane_core::TaskId;

use crate::broker::{Broker, Event, PublishOutcome, SettleKind, SettleRecord, DEAD, RESULTS};
use crate::endpoint::poison::is_scan_client;
use crate::endpoint::{Record, SimEndpoint};
use crate::service::{Service, ServiceRecord, MALFORMED_KEY};

pub use tasklane_core::audit::Violation;

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// What the oracles look at.
pub struct View<'a> {
    pub broker: &'a Broker,
    pub endpoints: &'a [SimEndpoint],
    pub service: &'a Service,
    /// The endpoints' task queue, `E.tasks`.
    pub task_queue: &'a str,
}

impl View<'_> {
    fn endpoint_of(&self, client: &str) -> Option<&SimEndpoint> {
        self.endpoints.iter().find(|e| e.owns_client(client))
    }
}

/// Incremental checker: remembers how far it has read each history.
#[derive(Default)]
pub struct Oracle {
    broker_seen: usize,
    endpoint_seen: Vec<usize>,
    service_seen: usize,
    /// Results the broker stored in `results` (and confirmed).
    stored_results: BTreeSet<String>,
}

impl Oracle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks everything new since the last call.
    pub fn check(&mut self, v: &View) -> Result<(), Violation> {
        let new_events = v.broker.events_since(self.broker_seen);
        self.broker_seen += new_events.len();
        for ev in &new_events {
            match ev {
                Event::Settled(r) => {
                    if let Some(ep) = v.endpoint_of(&r.channel.client) {
                        no_stale_tag_ack(r)?;
                        no_broker_ack_before_durable(r, ep)?;
                    }
                }
                Event::Published { channel, message_id: Some(id), outcome: PublishOutcome::Routed(queues), .. }
                    if queues.iter().any(|q| q == RESULTS) =>
                {
                    if let Some(ep) = v.endpoint_of(&channel.client) {
                        no_result_before_task_durable(id, ep)?;
                    }
                    self.stored_results.insert(id.clone());
                }
                _ => {}
            }
        }

        self.endpoint_seen.resize(v.endpoints.len(), 0);
        for (i, ep) in v.endpoints.iter().enumerate() {
            let records = ep.records_since(self.endpoint_seen[i]);
            self.endpoint_seen[i] += records.len();
            for r in &records {
                if let Record::Violation { life, invariant, detail } = r {
                    lane_invariants(ep, *life, invariant, detail)?;
                }
            }
        }

        let service_records = v.service.records_since(self.service_seen);
        self.service_seen += service_records.len();
        for r in &service_records {
            if let ServiceRecord::Accepted { task, sender } = r {
                accepted_results_belong_to_submitted(v.service, task, sender)?;
            }
        }

        // Consumers and queue contents change only with a broker event or a
        // service record; unchanged inputs give unchanged answers.
        if !new_events.is_empty() || !service_records.is_empty() {
            at_most_one_consumer(v)?;
            no_confirmed_result_lost(v, &self.stored_results)?;
        }
        Ok(())
    }
}

/// The lane invariants (`tasklane_core::audit`), judged by the auditor in
/// each endpoint's driver: a violation it recorded, under its own name.
pub fn lane_invariants(ep: &SimEndpoint, life: u64, invariant: &'static str, detail: &str) -> Result<(), Violation> {
    violation(invariant, format!("{} (spool lifetime {life}): {detail}", ep.name()))
}

/// No broker ack before the task is durable (SPEC §4, Intake), judged
/// where the ack lands: every task the broker settles
/// as acked for an endpoint is durable in that endpoint's spool.
pub fn no_broker_ack_before_durable(r: &SettleRecord, ep: &SimEndpoint) -> Result<(), Violation> {
    if r.kind != SettleKind::Ack {
        return Ok(());
    }
    for s in &r.settled {
        let durable =
            s.message_id.as_ref().and_then(|id| TaskId::new(id.clone()).ok()).is_some_and(|t| ep.spool().holds(&t));
        if !durable {
            return violation(
                "no_ack_before_durable",
                format!(
                    "broker removed {:?} on an ack from {} (channel {} gen {}, tag {}), \
                     but the task is not durable in its spool",
                    s.message_id, r.channel.client, r.channel.ch, r.channel.gen, s.tag
                ),
            );
        }
    }
    Ok(())
}

/// No result is published before its task is durable (SPEC §4,
/// Handoff): tasks are handed off before their spool write commits, but a
/// result the broker takes from an endpoint is of a task that endpoint's
/// spool holds durably (in its inbox, or completed).
pub fn no_result_before_task_durable(message_id: &str, ep: &SimEndpoint) -> Result<(), Violation> {
    let durable = TaskId::new(message_id).is_ok_and(|t| ep.spool().holds(&t));
    if durable {
        return Ok(());
    }
    violation(
        "no_result_before_task_durable",
        format!("{} published the result of {message_id:?}, but the task is not durable in its spool", ep.name()),
    )
}

/// No ack or reject names a tag its channel never issued (or already
/// settled): after a reconnect, old tags must not be used on new channels.
pub fn no_stale_tag_ack(r: &SettleRecord) -> Result<(), Violation> {
    if !r.unknown_tag {
        return Ok(());
    }
    violation(
        "no_stale_tag_ack",
        format!(
            "{} sent {:?} for tag {} (multiple={}) on channel {} gen {}, which has no such \
             delivery outstanding",
            r.channel.client, r.kind, r.tag, r.multiple, r.channel.ch, r.channel.gen
        ),
    )
}

/// At most one endpoint consumes the task queue: among the endpoints with
/// an active consumer or unacked deliveries on it, there is at most one.
/// Poison scans do not count: they hand nothing to an application. Nor do
/// deliveries left on a channel whose consumer the broker cancelled: the
/// broker gave the queue to the next consumer itself, and an endpoint cut
/// off from it cannot know before its connection dies (RabbitMQ does the
/// same; the endpoint drops its connection as soon as it hears).
pub fn at_most_one_consumer(v: &View) -> Result<(), Violation> {
    let mut holders = BTreeSet::new();
    for c in v.broker.active_consumers(v.task_queue) {
        if is_scan_client(&c.channel.client) {
            continue;
        }
        if let Some(ep) = v.endpoint_of(&c.channel.client) {
            holders.insert(ep.name().to_owned());
        }
    }
    for d in v.broker.unacked(v.task_queue) {
        if d.orphaned || is_scan_client(&d.channel.client) {
            continue;
        }
        if let Some(ep) = v.endpoint_of(&d.channel.client) {
            holders.insert(ep.name().to_owned());
        }
    }
    if holders.len() <= 1 {
        return Ok(());
    }
    violation(
        "at_most_one_consumer",
        format!("{} consume {} at once", holders.into_iter().collect::<Vec<_>>().join(" and "), v.task_queue),
    )
}

/// A result the broker confirmed into `results` is never lost: it stays in
/// `results` until the service takes it, and the service takes it only by
/// accepting it (or by dead-lettering it).
pub fn no_confirmed_result_lost(v: &View, stored: &BTreeSet<String>) -> Result<(), Violation> {
    let mut present: BTreeSet<String> = BTreeSet::new();
    for q in [RESULTS, DEAD] {
        present.extend(v.broker.messages(q).into_iter().filter_map(|s| s.message.message_id));
    }
    for id in stored {
        let accepted = TaskId::new(id.clone()).is_ok_and(|t| v.service.has_accepted(&t));
        if !accepted && !present.contains(id) {
            return violation(
                "no_confirmed_result_lost",
                format!("the result of {id} was confirmed into {RESULTS} but is gone"),
            );
        }
    }
    Ok(())
}

/// Every result the service accepts answers a task submitted to the
/// endpoint that sent it.
pub fn accepted_results_belong_to_submitted(
    service: &Service,
    task: &TaskId,
    sender: &tasklane_core::EndpointId,
) -> Result<(), Violation> {
    match service.owner(task) {
        Some(owner) if &owner == sender => Ok(()),
        owner => violation(
            "accepted_results_belong_to_submitted",
            format!("the service accepted a result for {task} from {sender}, owner {owner:?}"),
        ),
    }
}

/// Liveness after the heal: what has not converged yet, if anything.
pub fn pending(v: &View) -> Option<String> {
    let missing = v.service.missing();
    if let Some(first) = missing.first() {
        return Some(format!(
            "{} of {} results not accepted by the service (first: {first})",
            missing.len(),
            v.service.planned()
        ));
    }
    let dead: BTreeSet<String> = v
        .broker
        .messages(DEAD)
        .into_iter()
        .filter_map(|s| s.message.header_str(MALFORMED_KEY).map(str::to_owned))
        .collect();
    if let Some(key) = v.service.malformed().into_iter().find(|k| !dead.contains(k)) {
        return Some(format!("malformed submission {key} is not in {DEAD}"));
    }
    for ep in v.endpoints {
        let (inbox, outbox) = (ep.spool().inbox_len(), ep.spool().outbox_len());
        if inbox + outbox > 0 {
            return Some(format!("{} spool holds inbox={inbox} outbox={outbox}", ep.name()));
        }
    }
    for q in [v.task_queue, RESULTS] {
        let n = v.broker.counts(q).total();
        if n > 0 {
            return Some(format!("{q} still holds {n} message(s)"));
        }
    }
    None
}
