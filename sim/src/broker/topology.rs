//! Exchanges, queues and bindings, and how a publish is routed.
//!
//! The topology is fixed when the broker is built (the service side owns
//! it, SPEC §2) and is part of the durable state.

use std::collections::BTreeMap;

/// How an exchange matches routing keys against its bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    /// `*` matches one dot-separated word, `#` zero or more.
    Topic,
    /// Every bound queue, whatever the key.
    Fanout,
}

/// A durable exchange and its bindings (queue, binding key).
#[derive(Clone, Debug)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: ExchangeKind,
    pub bindings: Vec<(String, String)>,
}

/// Classic and quorum queues differ in one way that matters here: a quorum
/// queue does not enforce the `exclusive` consume flag (RabbitMQ 3.10, as
/// found on this project's broker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    Classic,
    Quorum,
}

/// A durable queue's arguments.
#[derive(Clone, Debug)]
pub struct QueueSpec {
    pub name: String,
    pub kind: QueueKind,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-dead-letter-exchange`: where rejected messages go.
    pub dead_letter_exchange: Option<String>,
    /// `x-max-length` with `x-overflow=reject-publish`: a publish to a full
    /// queue is nacked.
    pub max_length: Option<usize>,
}

impl QueueSpec {
    /// A classic queue without arguments.
    pub fn new(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            kind: QueueKind::Classic,
            single_active_consumer: false,
            dead_letter_exchange: None,
            max_length: None,
        }
    }
}

/// The broker's exchanges and queues. The default exchange `""` is
/// implicit: it routes to the queue named by the routing key.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub exchanges: BTreeMap<String, ExchangeSpec>,
    pub queues: BTreeMap<String, QueueSpec>,
}

/// Name of the results exchange and queue (SPEC §2).
pub const RESULTS: &str = "results";
/// Name of the dead-letter exchange and queue (SPEC §2).
pub const DEAD: &str = "tasklane.dead";

impl Topology {
    /// The tasklane topology for the given endpoints: `E.tasks` (single
    /// active consumer, dead-lettering to `tasklane.dead`), topic exchange
    /// `results` bound to queue `results` with `*.results`, and
    /// `tasklane.dead` (a fanout exchange and its queue).
    pub fn tasklane(endpoints: &[&str], kind: QueueKind) -> Self {
        let mut t = Topology::default();
        t.add_exchange(DEAD, ExchangeKind::Fanout);
        t.add_queue(QueueSpec::new(DEAD));
        t.bind(DEAD, DEAD, "");
        t.add_exchange(RESULTS, ExchangeKind::Topic);
        t.add_queue(QueueSpec { dead_letter_exchange: Some(DEAD.into()), ..QueueSpec::new(RESULTS) });
        t.bind(RESULTS, RESULTS, "*.results");
        for e in endpoints {
            t.add_queue(QueueSpec {
                kind,
                single_active_consumer: true,
                dead_letter_exchange: Some(DEAD.into()),
                ..QueueSpec::new(format!("{e}.tasks"))
            });
        }
        t
    }

    pub fn add_exchange(&mut self, name: &str, kind: ExchangeKind) -> &mut Self {
        self.exchanges.insert(name.to_owned(), ExchangeSpec { name: name.to_owned(), kind, bindings: Vec::new() });
        self
    }

    pub fn add_queue(&mut self, spec: QueueSpec) -> &mut Self {
        self.queues.insert(spec.name.clone(), spec);
        self
    }

    /// Binds `queue` to `exchange` with `key`. Panics on an unknown
    /// exchange: topologies are written by tests and the simulation.
    pub fn bind(&mut self, exchange: &str, queue: &str, key: &str) -> &mut Self {
        self.exchanges
            .get_mut(exchange)
            .unwrap_or_else(|| panic!("no exchange {exchange:?}"))
            .bindings
            .push((queue.to_owned(), key.to_owned()));
        self
    }

    /// The queues a publish reaches, in name order without duplicates;
    /// `None` when the exchange does not exist.
    pub fn route(&self, exchange: &str, routing_key: &str) -> Option<Vec<String>> {
        if exchange.is_empty() {
            return Some(self.queues.contains_key(routing_key).then(|| routing_key.to_owned()).into_iter().collect());
        }
        let ex = self.exchanges.get(exchange)?;
        let mut out: Vec<String> = ex
            .bindings
            .iter()
            .filter(|(_, key)| match ex.kind {
                ExchangeKind::Direct => key == routing_key,
                ExchangeKind::Topic => topic_matches(key, routing_key),
                ExchangeKind::Fanout => true,
            })
            .map(|(queue, _)| queue.clone())
            .filter(|q| self.queues.contains_key(q))
            .collect();
        out.sort();
        out.dedup();
        Some(out)
    }
}

/// AMQP topic matching: words separated by `.`, `*` is exactly one word,
/// `#` zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((&kw, krest)) => (w == "*" || w == kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("*.results", "E1.results"));
        assert!(!topic_matches("*.results", "a.b.results"));
        assert!(!topic_matches("*.results", "E1.tasks"));
        assert!(topic_matches("#.results", "a.b.results"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("a.#.z", "a.z"));
        assert!(!topic_matches("a.*", "a"));
    }

    #[test]
    fn tasklane_routes() {
        let t = Topology::tasklane(&["E1"], QueueKind::Classic);
        assert_eq!(t.route(RESULTS, "E1.results"), Some(vec!["results".into()]));
        assert_eq!(t.route(RESULTS, "E1.nope"), Some(vec![]));
        assert_eq!(t.route("", "E1.tasks"), Some(vec!["E1.tasks".into()]));
        assert_eq!(t.route("", "E2.tasks"), Some(vec![]));
        assert_eq!(t.route(DEAD, "anything"), Some(vec![DEAD.into()]));
        assert_eq!(t.route("missing", "x"), None);
        assert!(t.queues["E1.tasks"].single_active_consumer);
    }
}
