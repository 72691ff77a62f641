//! Declaring a queue that may already exist with other arguments.
//!
//! RabbitMQ cannot change a queue's type or arguments: declaring an
//! existing queue with other ones is refused with 406 PRECONDITION_FAILED,
//! which closes the channel. AMQP has no way to ask a queue's type first (a
//! passive `queue.declare` answers only with counts), and the management
//! API may be absent or closed to the service's user. So each queue is
//! declared on a channel of its own, the broker's refusal is read for the
//! argument it names and the value the queue has, and the caller decides:
//! the task queue's mismatch is a clear error, a shared queue of the other
//! type is kept as it is.

use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::Connection;
use amqprs::FieldTable;

use super::ServiceError;
use crate::amqp;

/// What declaring a queue found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Declared {
    /// The queue exists now, with the arguments asked for.
    Ok,
    /// The queue exists with another value of `arg` (`None`: not set).
    Inequivalent {
        /// The argument the broker named, e.g. `x-queue-type`.
        arg: String,
        /// The queue's value of it, as the broker quotes it.
        current: Option<String>,
    },
}

/// Declares durable queue `name` with `args` on a channel of its own.
pub(crate) async fn durable_queue(conn: &Connection, name: &str, args: FieldTable) -> Result<Declared, ServiceError> {
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let (channel, close) = amqp::open_channel(conn, (), tx).await?;
    let declare = QueueDeclareArguments::durable_client_named(name).arguments(args).finish();
    match channel.queue_declare(declare).await {
        Ok(_) => {
            let _ = channel.close().await;
            Ok(Declared::Ok)
        }
        Err(e) => {
            let err = amqp::Error::from_channel("queue.declare", e, &close);
            if let Some((406, text)) = close.get() {
                if let Some(found) = inequivalent(&text) {
                    return Ok(found);
                }
            }
            if channel.is_open() {
                let _ = channel.close().await;
            }
            Err(err.into())
        }
    }
}

/// Reads RabbitMQ's "inequivalent arg 'A' for queue 'Q' in vhost 'V':
/// received ... but current is ..." (3.10 words it a few ways).
fn inequivalent(text: &str) -> Option<Declared> {
    let rest = text.split_once("inequivalent arg '")?.1;
    let arg = rest.split_once('\'')?.0.to_string();
    let current = rest.rsplit_once("but current is ")?.1;
    let current = if current.starts_with("none") { None } else { Some(quoted(current)?.to_string()) };
    Some(Declared::Inequivalent { arg, current })
}

/// The first `'...'` of `s`.
fn quoted(s: &str) -> Option<&str> {
    let after = s.split_once('\'')?.1;
    Some(after.split_once('\'')?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(arg: &str, current: Option<&str>) -> Option<Declared> {
        Some(Declared::Inequivalent { arg: arg.into(), current: current.map(Into::into) })
    }

    #[test]
    fn reads_each_wording_of_the_refusal() {
        let q = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'ep.tasks' in vhost '/': ";
        assert_eq!(
            inequivalent(&format!("{q}received the value 'quorum' of type 'longstr' but current is none")),
            found("x-queue-type", None)
        );
        assert_eq!(
            inequivalent(&format!("{q}received 'classic' but current is 'quorum'")),
            found("x-queue-type", Some("quorum"))
        );
        let d = "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost 'v': ";
        assert_eq!(
            inequivalent(&format!("{d}received none but current is the value '20' of type 'signedint'")),
            found("x-delivery-limit", Some("20"))
        );
        assert_eq!(
            inequivalent(&format!("{d}received '30' but current is '20'")),
            found("x-delivery-limit", Some("20"))
        );
        assert_eq!(inequivalent("PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue 'q'"), None);
    }
}
