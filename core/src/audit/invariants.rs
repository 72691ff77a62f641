//! The named invariants of one lane. Each judges one output (or one
//! `handle` result) against the [`Auditor`]'s model and, where the output
//! changes what the lane holds, updates the model.

use crate::{
    decode_result, decode_task, Amqp, ChannelId, Input, Lane, OutboxSeq, Output, RawMessage, Report, ResultMeta,
    SpoolOp, TaskId, TaskLimits, UsageError,
};

use super::model::{Auditor, InFlight};
use super::{ensure, Before, Violation};

/// `Err` means misuse, and misuse means `Err` (h11's rule): a completion
/// for a task that was not handed off, a commit of writes never issued, an
/// answer to a connection never asked for.
pub fn err_only_for_misuse(
    input: &Input,
    misuse: Option<&UsageError>,
    result: &Result<(), UsageError>,
) -> Result<(), Violation> {
    const NAME: &str = "err_only_for_misuse";
    match (result, misuse) {
        (Err(e), Some(m)) => {
            ensure(e == m, NAME, || format!("{} refused as {e}, but the model's misuse is {m}", input.name()))
        }
        (Err(e), None) => {
            ensure(false, NAME, || format!("{} refused as misuse, but the model sees none: {e}", input.name()))
        }
        (Ok(()), Some(m)) => ensure(false, NAME, || format!("{} accepted, but it is misuse: {m}", input.name())),
        (Ok(()), None) => Ok(()),
    }
}

/// "The lane's state is unchanged when `handle` returns `Err`", also when
/// deadlines were due at the time.
pub fn misuse_changes_nothing(
    before: &Before,
    lane: &Lane,
    outputs: &[Output],
    e: &UsageError,
) -> Result<(), Violation> {
    const NAME: &str = "misuse_changes_nothing";
    ensure(outputs.is_empty(), NAME, || format!("the lane returned {e:?} but asked for {outputs:?}"))?;
    ensure(lane.status() == &before.status, NAME, || format!("the lane returned {e:?} but changed its status"))?;
    ensure(lane.counters() == &before.counters, NAME, || format!("the lane returned {e:?} but changed its counters"))
}

/// Deliveries an ack or reject settles: (channel, tag) and the message.
pub type Settled = Vec<((ChannelId, u64), RawMessage)>;

/// An ack or reject names a live consuming channel and a tag delivered on it
/// that is not settled (after a reconnect, old tags must not be used on new
/// channels); returns the deliveries it settles.
pub fn no_stale_tag_ack(a: &mut Auditor, channel: ChannelId, tag: u64, multiple: bool) -> Result<Settled, Violation> {
    const NAME: &str = "no_stale_tag_ack";
    ensure(a.channel_live(channel), NAME, || format!("ack or reject on channel {channel:?}, which is gone"))?;
    ensure(a.consume_channels.contains(&channel), NAME, || {
        format!("ack or reject on {channel:?}, which does not consume")
    })?;
    ensure(a.unsettled.contains_key(&(channel, tag)), NAME, || {
        format!(
            "ack or reject of tag {tag} on {channel:?}, which did not deliver it or settled it (unsettled: {:?})",
            a.unsettled.keys().collect::<Vec<_>>()
        )
    })?;
    let keys: Vec<(ChannelId, u64)> = if multiple {
        a.unsettled.range((channel, 0)..=(channel, tag)).map(|(k, _)| *k).collect()
    } else {
        vec![(channel, tag)]
    };
    Ok(keys.into_iter().map(|k| (k, a.unsettled.remove(&k).expect("listed above"))).collect())
}

/// No broker ack before the task is durable: an acked delivery is a task
/// whose insert the spool reported committed (or that the spool held at
/// start, or that completed).
pub fn no_ack_before_durable(a: &Auditor, key: (ChannelId, u64), message: &RawMessage) -> Result<(), Violation> {
    const NAME: &str = "no_ack_before_durable";
    let task = match decode_task(message, a.limits) {
        Ok(task) => task,
        Err(m) => return ensure(false, NAME, || format!("delivery {key:?} acked, but it is not a task ({m})")),
    };
    ensure(a.durable_tasks.contains(&task.id), NAME, || {
        format!(
            "delivery {key:?} of task {} acked before its spool write was committed (committed up to {})",
            task.id, a.committed
        )
    })
}

/// Only what is not a task is rejected (dead-lettered).
pub fn reject_only_malformed(a: &Auditor, key: (ChannelId, u64), message: &RawMessage) -> Result<(), Violation> {
    let judged = decode_task(message, a.limits);
    ensure(judged.is_err(), "reject_only_malformed", || format!("delivery {key:?} rejected, but it is a task"))
}

/// A task is handed off at most once per spool lifetime: only once its
/// spool write is issued (it need not be durable yet: SPEC §4 "Handoff"),
/// and not again while it is with the application, in the window of
/// recently completed ids, or its result is in the outbox. A recovered
/// hand-off happens only as the lane starts, for a task the inbox holds.
pub fn no_second_handoff(
    a: &mut Auditor,
    id: &TaskId,
    recovered: bool,
    input: Option<&Input>,
) -> Result<(), Violation> {
    const NAME: &str = "no_second_handoff";
    if recovered {
        ensure(input.is_none(), NAME, || {
            format!("recovered hand-off of {id} while handling {:?}", input.map(Input::name))
        })?;
        ensure(a.durable_view.inbox_contains(id), NAME, || {
            format!("recovered hand-off of {id}, which the inbox lacks")
        })?;
    } else {
        ensure(a.issued_view.inbox_contains(id), NAME, || {
            format!("task {id} handed off before its spool write was issued")
        })?;
        ensure(!a.window.contains(id), NAME, || format!("task {id} handed off again: it was completed recently"))?;
        ensure(!a.outbox.values().any(|r| &r.task == id), NAME, || {
            format!("task {id} handed off again: its result is in the outbox")
        })?;
    }
    ensure(a.handed.insert(id.clone()), NAME, || {
        format!("task {id} handed off twice: it is still with the application")
    })
}

/// Results leave the outbox only by a broker ack of a publish of that same
/// result, and not when the broker returned it as unroutable.
pub fn no_result_dropped_before_confirm(
    a: &mut Auditor,
    seq: OutboxSeq,
    input: Option<&Input>,
) -> Result<(), Violation> {
    const NAME: &str = "no_result_dropped_before_confirm";
    let Some(result) = a.outbox.remove(&seq) else {
        return ensure(false, NAME, || format!("confirmed outbox position {seq:?} holds nothing"));
    };
    ensure(matches!(input, Some(Input::PublishAck { .. })), NAME, || {
        format!(
            "result of task {} left the outbox while handling {:?}, not a publisher ack",
            result.task,
            input.map(Input::name)
        )
    })?;
    // Two publishes of the same result may be covered; a returned one is
    // matched only when no other is left.
    let matching = |p: &InFlight| p.seq == seq;
    let i =
        (a.acked_now.iter().position(|p| matching(p) && !p.returned)).or_else(|| a.acked_now.iter().position(matching));
    let Some(i) = i else {
        return ensure(false, NAME, || {
            format!("result of task {} left the outbox, but the ack covers no publish of it", result.task)
        });
    };
    let p = a.acked_now.remove(i);
    ensure(!p.returned, NAME, || {
        format!("result of task {} left the outbox although the broker returned it", result.task)
    })?;
    a.confirmed += 1;
    Ok(())
}

/// No result is published before its task's spool write is durable: the
/// task was handed off before its insert committed (SPEC §4 "Handoff"), so
/// a result may exist first, but the broker sees it only once the task is
/// on disk (a crash before would let the broker deliver it again while the
/// service already has its result).
pub fn no_result_before_task_durable(a: &Auditor, task: &TaskId) -> Result<(), Violation> {
    const NAME: &str = "no_result_before_task_durable";
    ensure(a.durable_tasks.contains(task), NAME, || {
        format!("published the result of task {task} before the task's spool write was committed")
    })
}

/// A publish of any kind (result or report) goes on a live channel in
/// confirm mode and takes that channel's next confirm tag: the broker
/// numbers every publish of the channel, so results and reports share one
/// numbering. Part of the invariant `name`.
fn takes_the_next_confirm_tag(
    a: &mut Auditor,
    name: &'static str,
    what: &str,
    channel: ChannelId,
    seq: u64,
) -> Result<(), Violation> {
    ensure(a.channel_live(channel), name, || format!("{what} on channel {channel:?}, which is gone"))?;
    let Some(last) = a.publish_channels.get_mut(&channel) else {
        return ensure(false, name, || format!("{what} on {channel:?}, which had no confirm.select"));
    };
    ensure(seq == *last + 1, name, || format!("confirm tag {seq} after {last}: tags count from 1 without gaps"))?;
    *last = seq;
    Ok(())
}

/// Publishes go on a live publishing channel with consecutive confirm tags,
/// to `results` under the endpoint's key, carry a valid result of this
/// endpoint, and only of a result the spool holds durably: the publish
/// names the outbox position whose committed record is that task's result
/// with that status and the application's body (checked in the completing
/// write by [`spool_accepts_every_write`]), and carries no body of its own,
/// so the shell publishes exactly the spool's.
#[allow(clippy::too_many_arguments)]
pub fn no_publish_before_durable(
    a: &mut Auditor,
    channel: ChannelId,
    seq: u64,
    exchange: &str,
    key: &str,
    result: OutboxSeq,
    message: &RawMessage,
) -> Result<(), Violation> {
    const NAME: &str = "no_publish_before_durable";
    takes_the_next_confirm_tag(a, NAME, "publish", channel, seq)?;
    let own_key = a.endpoint.result_key();
    ensure((exchange, key) == ("results", own_key.as_str()), NAME, || {
        format!("published to {exchange:?} with key {key:?}")
    })?;
    let limits = TaskLimits { max_body_bytes: usize::MAX, max_headers: usize::MAX };
    let received = match decode_result(key, message, limits) {
        Ok(r) => r,
        Err(m) => return ensure(false, NAME, || format!("published an invalid result: {m}")),
    };
    ensure(received.sender == a.endpoint, NAME, || format!("published a result of {}", received.sender))?;
    no_result_before_task_durable(a, &received.result.task)?;
    let task = received.result.task;
    ensure(message.body.is_empty(), NAME, || {
        format!("the publish of task {task}'s result carries a body: the shell reads it from the spool")
    })?;
    let durable = a.durable_view.snapshot();
    let stored = durable.outbox.iter().find(|r| r.seq == result);
    ensure(stored.is_some_and(|r| r.task == task && r.status == received.result.status), NAME, || {
        format!("published the result of task {task} at {result:?}, whose completion is not committed: {stored:?}")
    })?;
    a.in_flight.insert((channel, seq), InFlight { seq: result, task, returned: false });
    Ok(())
}

/// Status reports go on a live publishing channel, in its confirm
/// numbering, to `results` under the endpoint's `E.status`, numbered 1, 2,
/// 3, ... and telling the status the lane last reported; they are never in
/// flight as results, so no confirm of theirs can take a result out of the
/// outbox.
pub fn reports_fit_the_session(
    a: &mut Auditor,
    channel: ChannelId,
    seq: u64,
    exchange: &str,
    key: &str,
    report: &Report,
) -> Result<(), Violation> {
    const NAME: &str = "reports_fit_the_session";
    takes_the_next_confirm_tag(a, NAME, "report", channel, seq)?;
    let own_key = a.endpoint.status_key();
    ensure((exchange, key) == ("results", own_key.as_str()), NAME, || {
        format!("report published to {exchange:?} with key {key:?}")
    })?;
    ensure(report.seq == a.reports + 1, NAME, || format!("report {} after {}", report.seq, a.reports))?;
    a.reports = report.seq;
    ensure(a.last_status.as_ref() == Some(&report.status), NAME, || {
        format!("report says {:?}, the lane last reported {:?}", report.status, a.last_status)
    })
}

/// Writes are numbered 1, 2, 3, ...; each applies to the spool as issued;
/// a completion carries the application's result and forgets what the
/// completed window forgets; a confirm is justified.
pub fn spool_accepts_every_write(
    a: &mut Auditor,
    seq: u64,
    op: &SpoolOp,
    input: Option<&Input>,
) -> Result<(), Violation> {
    const NAME: &str = "spool_accepts_every_write";
    ensure(seq == a.issued + 1, NAME, || format!("write {seq} after {}: writes are numbered without gaps", a.issued))?;
    a.issued = seq;
    match op {
        SpoolOp::Insert(_) => {}
        SpoolOp::Complete { seq: out, result, forget } => {
            let from_app = match input {
                Some(Input::Complete { task, status, body }) => {
                    (task, status, body) == (&result.task, &result.status, &result.body)
                }
                _ => false,
            };
            ensure(from_app, NAME, || {
                format!(
                    "completion of {} written while handling {:?}, not the application's result",
                    result.task,
                    input.map(Input::name)
                )
            })?;
            let expected = a.remember_completed(result.task.clone());
            ensure(forget == &expected, NAME, || {
                format!("the write forgets {forget:?}, the completed window {expected:?}")
            })?;
            a.handed.remove(&result.task);
            a.outbox.insert(*out, ResultMeta::of(*out, result));
            a.completed += 1;
        }
        SpoolOp::Confirmed { seq: out } => no_result_dropped_before_confirm(a, *out, input)?,
    }
    let applied = a.issued_view.apply(op);
    ensure(applied.is_ok(), NAME, || format!("write {seq} does not fit the spool: {applied:?}: {op:?}"))?;
    a.uncommitted.insert(seq, op.clone());
    Ok(())
}

/// Connection and channel ids are fresh; commands go to live channels of
/// the current connection; the lane consumes its own queue.
pub fn commands_fit_the_session(a: &Auditor, cmd: &Amqp) -> Result<(), Violation> {
    const NAME: &str = "commands_fit_the_session";
    let live = |channel: &ChannelId, what: &str| {
        ensure(a.channel_live(*channel), NAME, || {
            format!("{what} on channel {channel:?}, which is gone or was never opened")
        })
    };
    let queue_ok = |queue: &str| {
        ensure(queue == a.endpoint.task_queue(), NAME, || format!("the lane names queue {queue:?}, not its own"))
    };
    match cmd {
        Amqp::Connect { conn, .. } => ensure(conn.0 == a.last_conn + 1, NAME, || {
            format!("connection id {} after {}: ids must be fresh", conn.0, a.last_conn)
        }),
        Amqp::OpenChannel { channel } => {
            ensure(!a.channel_conn.contains_key(channel), NAME, || format!("channel id {channel:?} reused"))?;
            let conn = a.last_conn();
            ensure(a.conn_live(conn), NAME, || format!("channel opened on connection {conn:?}, which is gone"))
        }
        Amqp::Qos { channel, prefetch } => {
            live(channel, "basic.qos")?;
            ensure(*prefetch > 0, NAME, || "prefetch 0 means unlimited".into())
        }
        Amqp::Consume { channel, queue, .. } => {
            live(channel, "basic.consume")?;
            queue_ok(queue)
        }
        Amqp::QueryConsumers { channel, queue } => {
            live(channel, "queue.declare")?;
            // Asked before the consume and after it, so on the channel set
            // up for consuming (qos sent), consuming yet or not.
            ensure(a.qos_channels.contains(channel) || a.consume_channels.contains(channel), NAME, || {
                format!("consumer count asked on {channel:?}, which is not set up to consume")
            })?;
            queue_ok(queue)
        }
        Amqp::ConfirmSelect { channel } => live(channel, "confirm.select"),
        Amqp::Quarantine { queue, .. } => {
            // The scan consumes the queue itself: no consumer of the lane's
            // may be registered meanwhile.
            let conn = a.last_conn();
            ensure(!a.conn_live(conn), NAME, || format!("a poison scan while connection {conn:?} may be live"))?;
            queue_ok(queue)
        }
        Amqp::Ack { .. }
        | Amqp::Reject { .. }
        | Amqp::Publish { .. }
        | Amqp::PublishReport { .. }
        | Amqp::Disconnect { .. } => Ok(()),
    }
}

/// After `Shutdown`, no delivery is spooled and no connection is made.
pub fn no_intake_after_shutdown(a: &Auditor, out: &Output) -> Result<(), Violation> {
    if !a.shutdown {
        return Ok(());
    }
    let intake = matches!(out, Output::Spool(w) if matches!(w.op, SpoolOp::Insert(_)))
        || matches!(out, Output::Amqp(Amqp::Connect { .. } | Amqp::Quarantine { .. }));
    ensure(!intake, "no_intake_after_shutdown", || format!("after Shutdown the lane asked for {out:?}"))
}

/// The lane's sizes and counters agree with the history; the status it
/// reports is the last status event.
pub fn counters_match_history(a: &Auditor, lane: &Lane) -> Result<(), Violation> {
    const NAME: &str = "counters_match_history";
    ensure(lane.inbox_len() == a.issued_view.inbox_len(), NAME, || {
        format!("inbox size {} differs from the writes issued ({})", lane.inbox_len(), a.issued_view.inbox_len())
    })?;
    ensure(lane.outbox_len() == a.issued_view.outbox_len(), NAME, || {
        format!("outbox size {} differs from the writes issued ({})", lane.outbox_len(), a.issued_view.outbox_len())
    })?;
    ensure((lane.last_write().0, lane.committed().0) == (a.issued, a.committed), NAME, || {
        format!(
            "write positions {:?} differ from ({}, {})",
            (lane.last_write(), lane.committed()),
            a.issued,
            a.committed
        )
    })?;
    let c = lane.counters();
    let counted = (c.acked, c.rejected, c.completed, c.confirmed);
    ensure(counted == a.tallies(), NAME, || {
        format!(
            "counters (acked, rejected, completed, confirmed) {counted:?} differ from the history {:?}",
            a.tallies()
        )
    })?;
    ensure(c.acked + c.rejected <= c.received, NAME, || format!("settled more deliveries than received: {c:?}"))?;
    match &a.last_status {
        Some(s) => ensure(lane.status() == s, NAME, || {
            format!("status {:?} differs from the last status event {s:?}", lane.status())
        }),
        None => Ok(()),
    }
}
