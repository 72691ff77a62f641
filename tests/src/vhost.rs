//! A throwaway RabbitMQ virtual host per test, through the management API.
//!
//! The management HTTP API was picked over `rabbitmqctl` because it is about
//! twenty times faster per vhost (create, grant, delete: ~80 ms with three
//! HTTP calls against ~1.6 s for three `rabbitmqctl` runs, each of which boots
//! an Erlang VM and burns a core meanwhile).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::Connection;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{amqp_args, amqp_url, broker_addr, percent_encode, HarnessError, BROKER_MANAGEMENT};

/// A broker (one node, or a cluster seen through its nodes) the harness
/// makes vhosts on: where AMQP is, and the management APIs to ask, in
/// order (a node that does not answer is skipped).
#[derive(Clone, Copy, Debug)]
pub struct Broker {
    /// The AMQP address of the node the harness's own connections use.
    pub amqp: std::net::SocketAddr,
    /// Base URLs of the management APIs, `http://host:port`.
    pub management: &'static [&'static str],
}

/// The default node of `scripts/ensure-rabbitmq.sh`.
const DEFAULT_BROKER_MANAGEMENT: &[&str] = &[BROKER_MANAGEMENT];

impl Broker {
    /// The default node, on 127.0.0.1:5672 and :15672.
    pub fn default_node() -> Self {
        Self { amqp: broker_addr(), management: DEFAULT_BROKER_MANAGEMENT }
    }
}

/// Prefix of every vhost the harness creates; what follows is
/// `<pid>-<counter>-<random>`.
const PREFIX: &str = "tasklane-test-";

/// A fresh, uniquely named vhost on the broker in which guest may do
/// everything. Deleted (with everything in it) when dropped.
///
/// The first `create` of a process also deletes vhosts left behind by test
/// processes that no longer run (killed before their drop ran).
#[derive(Debug)]
pub struct Vhost {
    name: String,
    broker: Broker,
}

/// A queue as the management API reports it.
///
/// The counts come from the broker's statistics, which it refreshes every
/// `collect_statistics_interval` (5 s by default): they lag, and are `None`
/// for a queue younger than that. Use [`Vhost::queue_counts`] for a live count.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// `classic` or `quorum` (or `stream`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the queue survives a broker restart.
    pub durable: bool,
    /// The queue's `x-` arguments.
    #[serde(default)]
    pub arguments: Value,
    /// Messages ready plus unacknowledged (lagging statistic).
    pub messages: Option<u64>,
    /// Messages ready for delivery (lagging statistic).
    pub messages_ready: Option<u64>,
    /// Messages delivered and not yet acknowledged (lagging statistic).
    pub messages_unacknowledged: Option<u64>,
    /// Consumers attached (lagging statistic).
    pub consumers: Option<u64>,
    /// The node a classic queue lives on, or a quorum queue's leader.
    #[serde(default)]
    pub node: Option<String>,
    /// A quorum queue's leader node.
    #[serde(default)]
    pub leader: Option<String>,
    /// A quorum queue's member nodes.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// The consumers, as the management API details them (with
    /// `active` and `activity_status` under single active consumer).
    #[serde(default)]
    pub consumer_details: Value,
}

/// Live counts of a queue, from an AMQP passive `queue.declare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready for delivery (unacknowledged ones are not counted).
    pub ready: u32,
    /// Consumers attached, active or waiting (single active consumer).
    pub consumers: u32,
}

/// A message read from a queue with the management API's "get messages".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeekedMessage {
    /// The exchange it was published to (empty for the default exchange).
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Whether the broker had delivered it before.
    pub redelivered: bool,
    /// The AMQP `message_id` property, if set.
    pub message_id: Option<String>,
    /// The AMQP headers table (`Value::Null` when there is none).
    pub headers: Value,
    /// All AMQP properties as the management API shows them.
    pub properties: Value,
    /// The body.
    pub payload: Vec<u8>,
}

impl Vhost {
    /// Creates a fresh vhost on the default node and gives guest full
    /// permissions on it.
    pub fn create() -> Result<Vhost, HarnessError> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| sweep_stale(Broker::default_node()));
        Self::create_on(Broker::default_node())
    }

    /// [`Vhost::create`] on `broker` (no sweep of stale vhosts).
    pub fn create_on(broker: Broker) -> Result<Vhost, HarnessError> {
        let vhost = Vhost { name: unique_name(), broker };
        let path = vhost.api_path("vhosts");
        vhost.mgmt(Method::Put, &path, None)?.expect_success()?;
        let perms = json!({ "configure": ".*", "write": ".*", "read": ".*" });
        let path = format!("/permissions/{}/guest", percent_encode(&vhost.name));
        vhost.mgmt(Method::Put, &path, Some(&perms))?.expect_success()?;
        Ok(vhost)
    }

    fn mgmt(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, HarnessError> {
        mgmt(self.broker.management, method, path, body)
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The broker it is on.
    pub fn broker(&self) -> Broker {
        self.broker
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`, straight to the broker
    /// (to its AMQP address).
    pub fn url(&self) -> String {
        amqp_url(self.broker.amqp, &self.name)
    }

    /// The queue as the management API reports it, `None` if it does not
    /// exist. Its counts lag (see [`QueueInfo`]); whether it exists does not.
    pub fn queue(&self, queue: &str) -> Result<Option<QueueInfo>, HarnessError> {
        let path = self.queue_path(queue);
        let answer = self.mgmt(Method::Get, &path, None)?;
        if answer.status == 404 {
            return Ok(None);
        }
        answer.expect_success()?.json(&path).map(Some)
    }

    /// Live counts of a queue (AMQP passive declare on a connection of its
    /// own), `None` if the queue does not exist.
    pub async fn queue_counts(&self, queue: &str) -> Result<Option<QueueCounts>, HarnessError> {
        let connection = Connection::open(&amqp_args(self.broker.amqp, &self.name)).await?;
        let declared = match connection.open_channel(None).await {
            Ok(channel) => {
                let args = QueueDeclareArguments::new(queue).passive(true).finish();
                let declared = channel.queue_declare(args).await;
                if declared.is_ok() {
                    let _ = channel.close().await;
                }
                declared
            }
            Err(e) => Err(e),
        };
        let _ = connection.close().await;
        match declared {
            Ok(Some((_, ready, consumers))) => Ok(Some(QueueCounts { ready, consumers })),
            // A passive declare always answers; no answer is not a count.
            Ok(None) => Err(HarnessError::Unexpected {
                path: format!("queue.declare {queue}"),
                detail: "passive declare got no declare-ok".into(),
            }),
            // amqprs reports the broker's 404 as a bare "channel closed":
            // ask the management API whether the queue is there.
            Err(e) => match self.queue(queue)? {
                None => Ok(None),
                Some(_) => Err(e.into()),
            },
        }
    }

    /// Reads up to `max` messages from the head of `queue` and puts them back
    /// (they come back marked redelivered). Live, unlike the counts of
    /// [`Vhost::queue`]. A consumer on the queue competes for them.
    pub fn peek_messages(&self, queue: &str, max: usize) -> Result<Vec<PeekedMessage>, HarnessError> {
        #[derive(Deserialize)]
        struct Got {
            exchange: String,
            routing_key: String,
            redelivered: bool,
            // `[]` rather than `{}` when the message has no properties.
            properties: Value,
            payload: String,
            payload_encoding: String,
        }

        let path = format!("{}/get", self.queue_path(queue));
        let request = json!({
            "count": max,
            "ackmode": "ack_requeue_true",
            "encoding": "base64",
        });
        let got: Vec<Got> = self.mgmt(Method::Post, &path, Some(&request))?.expect_success()?.json(&path)?;
        got.into_iter()
            .map(|m| {
                let payload = match m.payload_encoding.as_str() {
                    "base64" => base64_decode(&m.payload),
                    _ => Some(m.payload.clone().into_bytes()),
                }
                .ok_or_else(|| HarnessError::Unexpected {
                    path: path.clone(),
                    detail: format!("payload is not base64: {:?}", m.payload),
                })?;
                Ok(PeekedMessage {
                    exchange: m.exchange,
                    routing_key: m.routing_key,
                    redelivered: m.redelivered,
                    message_id: m.properties["message_id"].as_str().map(str::to_owned),
                    headers: m.properties["headers"].clone(),
                    properties: m.properties,
                    payload,
                })
            })
            .collect()
    }

    /// Deletes `queue` with everything in it. `false` if it did not exist.
    pub fn delete_queue(&self, queue: &str) -> Result<bool, HarnessError> {
        let answer = self.mgmt(Method::Delete, &self.queue_path(queue), None)?;
        if answer.status == 404 {
            return Ok(false);
        }
        answer.expect_success()?;
        Ok(true)
    }

    fn api_path(&self, collection: &str) -> String {
        format!("/{collection}/{}", percent_encode(&self.name))
    }

    fn queue_path(&self, queue: &str) -> String {
        format!("{}/{}", self.api_path("queues"), percent_encode(queue))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(e) = delete_vhost(self.broker, &self.name) {
            eprintln!("tasklane-tests: could not delete vhost {}: {e}", self.name);
        }
    }
}

/// `tasklane-test-<pid>-<counter>-<random>`: the pid and counter make it
/// unique on this machine, the random part across machines sharing a broker.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(nanos.as_nanos());
    let random = hasher.finish() & 0xffff_ffff;
    format!("{PREFIX}{}-{counter}-{random:08x}", std::process::id())
}

/// Whether a vhost of that name exists on the broker.
pub fn vhost_exists(name: &str) -> Result<bool, HarnessError> {
    let answer = mgmt(DEFAULT_BROKER_MANAGEMENT, Method::Get, &format!("/vhosts/{}", percent_encode(name)), None)?;
    if answer.status == 404 {
        return Ok(false);
    }
    answer.expect_success()?;
    Ok(true)
}

fn delete_vhost(broker: Broker, name: &str) -> Result<(), HarnessError> {
    let answer = mgmt(broker.management, Method::Delete, &format!("/vhosts/{}", percent_encode(name)), None)?;
    if answer.status != 404 {
        answer.expect_success()?;
    }
    Ok(())
}

/// Deletes the harness's vhosts on `broker` whose process is gone. Best
/// effort: a failure here is left for `create` to report.
pub(crate) fn sweep_stale(broker: Broker) {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let Ok(answer) = mgmt(broker.management, Method::Get, "/vhosts?columns=name", None) else {
        return;
    };
    let Ok(vhosts) = answer.json::<Vec<Named>>("/vhosts") else {
        return;
    };
    for vhost in vhosts {
        let Some(pid) = vhost
            .name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = delete_vhost(broker, &vhost.name);
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Put,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

struct Answer {
    method: Method,
    path: String,
    status: u16,
    body: String,
}

impl Answer {
    fn expect_success(self) -> Result<Answer, HarnessError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(HarnessError::Management {
                method: self.method.as_str(),
                path: self.path,
                status: self.status,
                body: self.body,
            })
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, HarnessError> {
        serde_json::from_str(&self.body)
            .map_err(|e| HarnessError::Unexpected { path: path.to_owned(), detail: format!("{e}: {}", self.body) })
    }
}

/// One call to the first management API of `bases` that answers, as guest.
/// Any HTTP status is an answer; only transport failures are errors (of
/// the last one tried).
fn mgmt(bases: &[&str], method: Method, path: &str, body: Option<&Value>) -> Result<Answer, HarnessError> {
    let mut last = None;
    for base in bases {
        match mgmt_at(base, method, path, body) {
            Err(e @ HarnessError::Http { .. }) => last = Some(e),
            answer => return answer,
        }
    }
    Err(last.expect("at least one management API"))
}

fn mgmt_at(base: &str, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, HarnessError> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    });
    // base64("guest:guest")
    const AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";
    let url = format!("{base}/api{path}");
    let sent = match (method, body) {
        (Method::Get, _) => agent.get(&url).header("authorization", AUTH).call(),
        (Method::Delete, _) => agent.delete(&url).header("authorization", AUTH).call(),
        (Method::Put, None) => agent.put(&url).header("authorization", AUTH).send_empty(),
        (Method::Put, Some(body)) => agent.put(&url).header("authorization", AUTH).send_json(body),
        (Method::Post, None) => agent.post(&url).header("authorization", AUTH).send_empty(),
        (Method::Post, Some(body)) => agent.post(&url).header("authorization", AUTH).send_json(body),
    };
    let http_error = |source| HarnessError::Http { method: method.as_str(), path: path.to_owned(), source };
    let mut response = sent.map_err(http_error)?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(http_error)?;
    Ok(Answer { method, path: path.to_owned(), status, body })
}

/// Standard base64 (with or without padding); `None` if `s` is not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("Z3Vlc3Q6Z3Vlc3Q=").unwrap(), b"guest:guest");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("AP8=").unwrap(), [0x00, 0xff]);
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("a*bc").is_none());
    }

    #[test]
    fn unique_names_differ_and_carry_the_pid() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{PREFIX}{}-", std::process::id())));
    }
}
