//! Publishing, mandatory returns and publisher confirms.
//!
//! A publish is stored synchronously, so in confirm mode the ack follows at
//! once; it can still be lost with the connection, which is what makes a
//! publisher resend. Confirm tags count per channel from 1, as in AMQP.

use super::engine::Engine;
use super::event::{ConnId, Event, PublishOutcome};
use crate::wire::{code, ChannelNo, Message, ServerMethod};

impl Engine {
    pub(super) fn publish(
        &mut self,
        conn: ConnId,
        ch: ChannelNo,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        message: Message,
    ) {
        let channel = self.channel_ref(conn, ch);
        let Some(targets) = self.topology.route(exchange, routing_key) else {
            let text = format!("NOT_FOUND - no exchange '{exchange}' in vhost '/'");
            self.channel_error(conn, ch, code::NOT_FOUND, &text);
            return;
        };
        let chan = self.channel_mut(conn, ch);
        let confirm_tag = chan.confirm.then(|| {
            chan.next_confirm += 1;
            chan.next_confirm - 1
        });
        let full = targets.iter().any(|q| {
            let limit = self.topology.queues[q].max_length;
            limit.is_some_and(|max| self.queues[q].counts().total() >= max)
        });
        let outcome = if targets.is_empty() {
            if mandatory {
                self.send(
                    conn,
                    ServerMethod::Return {
                        ch,
                        reply_code: code::NO_ROUTE,
                        reply_text: "NO_ROUTE".into(),
                        exchange: exchange.to_owned(),
                        routing_key: routing_key.to_owned(),
                        message: message.clone(),
                    },
                );
            }
            PublishOutcome::Unroutable { returned: mandatory }
        } else if full {
            PublishOutcome::Rejected
        } else {
            for q in &targets {
                self.enqueue(q, exchange, routing_key, message.clone());
            }
            PublishOutcome::Routed(targets)
        };
        if let Some(tag) = confirm_tag {
            let reply = if outcome == PublishOutcome::Rejected {
                ServerMethod::PublishNack { ch, tag, multiple: false }
            } else {
                ServerMethod::PublishAck { ch, tag, multiple: false }
            };
            self.send(conn, reply);
        }
        self.events.push(Event::Published {
            channel,
            confirm_tag,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            message_id: message.message_id,
            outcome,
        });
    }
}
