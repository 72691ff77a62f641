//! Per-endpoint users: with E's credentials the broker refuses everything
//! but consuming `E.tasks` and publishing to `results` under `E.results`
//! and `E.status`,
//! and E's own endpoint still runs its round trip under them.
//!
//! The service-side ownership check (a spoofed result is dead-lettered even
//! when the broker let it through, e.g. sent as guest) is tested in
//! `service_results.rs`, `spoofed_results_are_dead_lettered_and_duplicates_accepted_once`.

use std::time::Duration;

use amqprs::channel::{BasicConsumeArguments, ConfirmSelectArguments, QueueDeclareArguments};
use amqprs::connection::Connection;
use bytes::Bytes;
use tasklane_core::{encode_result, EndpointId, ResultStatus, TaskId, TaskResult};
use tasklane_io::amqp::{self, ChannelEvent, ConnectOptions};
use tasklane_io::fleet::status_key;
use tasklane_io::service::{provision, provision_user, users, Management, QueueType, UserError};
use tasklane_tests::{Tasklane, Vhost};
use tokio::sync::mpsc;

/// A fresh endpoint id: users are per broker, not per vhost.
fn fresh_endpoint(stem: &str) -> EndpointId {
    EndpointId::new(format!("{stem}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])).unwrap()
}

fn guest_api() -> Management {
    Management::new("http://127.0.0.1:15672", "guest", "guest").unwrap()
}

/// Deletes the endpoint users a test made, whatever happened.
struct Users(Vec<EndpointId>);

impl Drop for Users {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for id in ids {
                    let _ = users::delete_user(&guest_api(), &id).await;
                }
            });
        })
        .join();
    }
}

fn user_url(vhost: &Vhost, user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@127.0.0.1:5672/{}", tasklane_tests::percent_encode(vhost.name()))
}

async fn connect(url: &str) -> Connection {
    amqp::connect(&ConnectOptions::parse(url).unwrap()).await.unwrap()
}

/// What the broker answers to a publish on a confirm channel: the publish
/// is confirmed (`Ok`), or the channel is closed with a reply code (`Err`).
async fn publish_outcome(conn: &Connection, exchange: &str, routing_key: &str, sender: &EndpointId) -> Result<(), u16> {
    let (tx, mut events) = mpsc::unbounded_channel();
    let (channel, _) = amqp::open_channel(conn, (), tx).await.unwrap();
    channel.confirm_select(ConfirmSelectArguments::default()).await.unwrap();
    let r = TaskResult { task: TaskId::new("t-1").unwrap(), status: ResultStatus::Ok, body: Bytes::from("x") };
    let raw = encode_result(sender, &r);
    let props = amqp::publish_properties(&raw).unwrap();
    // basic.publish has no reply: a refusal comes back as a channel close.
    let _ = channel.basic_publish(props, raw.body.to_vec(), amqp::publish_args(exchange, routing_key)).await;
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(((), ChannelEvent::PublishAck { .. }))) => break Ok(()),
            Ok(Some(((), ChannelEvent::Closed { code, .. }))) => break Err(code),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("no confirm and no close for a publish to {exchange:?} / {routing_key:?}"),
        }
    };
    if channel.is_open() {
        let _ = channel.close().await;
    }
    outcome
}

/// The broker's reply code to an RPC on a fresh channel; `Ok` if it succeeded.
async fn rpc_outcome<F, Fut>(conn: &Connection, rpc: F) -> Result<(), u16>
where
    F: FnOnce(amqprs::channel::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), amqprs::error::Error>>,
{
    let (tx, _events) = mpsc::unbounded_channel();
    let (channel, close) = amqp::open_channel(conn, (), tx).await.unwrap();
    let result = rpc(channel.clone()).await;
    let outcome = match result {
        Ok(()) => Ok(()),
        Err(e) => Err(close.get().unwrap_or_else(|| panic!("RPC failed without a channel close: {e}")).0),
    };
    if channel.is_open() {
        let _ = channel.close().await;
    }
    outcome
}

const ACCESS_REFUSED: u16 = 403;

#[tokio::test]
async fn an_endpoint_user_may_only_consume_its_queue_and_publish_its_results() {
    let vhost = Vhost::create().unwrap();
    let (e, f) = (fresh_endpoint("auth-e"), fresh_endpoint("auth-f"));
    let _cleanup = Users(vec![e.clone()]);
    let guest = connect(&vhost.url()).await;
    provision(&guest, &e, QueueType::Classic).await.unwrap();
    provision(&guest, &f, QueueType::Classic).await.unwrap();
    let _ = guest.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)

    let made = provision_user(&guest_api(), vhost.name(), &e, false).await.unwrap();
    assert!(made.created);
    let password = made.password.clone().expect("a new user gets a password");
    let conn = connect(&user_url(&vhost, e.as_str(), &password)).await;

    // Allowed: its own routing keys on `results` (results and status
    // reports), and consuming its own queue.
    assert_eq!(publish_outcome(&conn, "results", &e.result_key(), &e).await, Ok(()));
    assert_eq!(publish_outcome(&conn, "results", &status_key(&e), &e).await, Ok(()));
    let own = e.task_queue();
    let consume_own = rpc_outcome(&conn, |ch| async move {
        ch.basic_consume(NoopConsumer, BasicConsumeArguments::new(&own, "c").manual_ack(true).finish()).await.map(drop)
    });
    assert_eq!(consume_own.await, Ok(()));

    // Refused by the broker: another endpoint's key, another exchange,
    // another endpoint's queue, and declaring anything.
    assert_eq!(publish_outcome(&conn, "results", &f.result_key(), &e).await, Err(ACCESS_REFUSED));
    assert_eq!(publish_outcome(&conn, "results", &status_key(&f), &e).await, Err(ACCESS_REFUSED));
    assert_eq!(publish_outcome(&conn, "", &f.task_queue(), &e).await, Err(ACCESS_REFUSED));
    let theirs = f.task_queue();
    let consume_theirs = rpc_outcome(&conn, |ch| async move {
        ch.basic_consume(NoopConsumer, BasicConsumeArguments::new(&theirs, "c").manual_ack(true).finish())
            .await
            .map(drop)
    });
    assert_eq!(consume_theirs.await, Err(ACCESS_REFUSED));
    let declare = rpc_outcome(&conn, |ch| async move {
        ch.queue_declare(QueueDeclareArguments::durable_client_named("stolen")).await.map(drop)
    });
    assert_eq!(declare.await, Err(ACCESS_REFUSED));
    let redeclare_own = e.task_queue();
    let declare_own = rpc_outcome(&conn, |ch| async move {
        ch.queue_declare(QueueDeclareArguments::durable_client_named(&redeclare_own)).await.map(drop)
    });
    assert_eq!(declare_own.await, Err(ACCESS_REFUSED), "even its own queue may not be (re)declared");
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)

    // Provisioning again keeps the password unless asked to rotate it.
    let again = provision_user(&guest_api(), vhost.name(), &e, false).await.unwrap();
    assert_eq!((again.created, again.password.is_none()), (false, true));
    let rotated = provision_user(&guest_api(), vhost.name(), &e, true).await.unwrap();
    let new_password = rotated.password.expect("rotation gives a new password");
    assert_ne!(new_password, password);
    assert!(amqp::connect(&ConnectOptions::parse(&user_url(&vhost, e.as_str(), &password)).unwrap()).await.is_err());
    let _ = connect(&user_url(&vhost, e.as_str(), &new_password)).await.close().await;
    // connecting is the check; see endpoint_amqp.rs on close
}

#[tokio::test]
async fn a_user_that_is_not_an_endpoint_user_is_left_alone() {
    let api = guest_api();
    let e = fresh_endpoint("human");
    let path = format!("/users/{}", e.as_str());
    api.put(&path, &serde_json::json!({ "password": "secret", "tags": "management" })).await.unwrap();
    let vhost = Vhost::create().unwrap();
    let outcome = provision_user(&api, vhost.name(), &e, true).await;
    let refused_delete = users::delete_user(&api, &e).await;
    api.delete(&path).await.unwrap();
    assert!(matches!(outcome, Err(UserError::Foreign(_))), "{outcome:?}");
    assert!(matches!(refused_delete, Err(UserError::Foreign(_))), "{refused_delete:?}");
}

/// `tasklane provision E --user` prints the password once; the endpoint
/// runs under it and its results reach the service.
#[test]
fn the_endpoint_round_trip_works_under_its_own_user() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = Tasklane::new(vhost.url(), dir.path().join("service"));
    let e = fresh_endpoint("auth-rt");
    let _cleanup = Users(vec![e.clone()]);

    let out = service.run_ok(&["provision", e.as_str(), "--user"]);
    let url_line = out.lines().find_map(|l| l.strip_prefix("endpoint URL: ")).expect("the endpoint URL is printed");
    let password_line = out.lines().find(|l| l.contains("shown only this once")).expect("the password is printed");
    assert!(url_line.starts_with(&format!("amqp://{}:", e.as_str())), "{out}");
    let again = service.run_ok(&["provision", e.as_str(), "--user"]);
    assert!(again.contains("password unchanged"), "{again}");
    let password = password_line.rsplit(' ').next().unwrap();
    assert!(!again.contains(password), "the password is shown only once");

    service.run_ok(&["submit", e.as_str(), "--count", "20", "--size", "8"]);
    let endpoint = service.with_url(url_line);
    let mut running = endpoint.endpoint(e.as_str(), &dir.path().join("spool"), &[]);
    let (results, complete) = service.results(20, Duration::from_secs(60));
    let stderr = running.stderr();
    running.terminate(Duration::from_secs(20));
    assert!(complete, "only {} of 20 results; endpoint stderr:\n{stderr}", results.len());
    assert!(results.iter().all(|r| r.endpoint == e.as_str() && r.status == "ok"));
    assert!(!stderr.contains("403"), "the endpoint met a refusal:\n{stderr}");
}

struct NoopConsumer;

#[async_trait::async_trait]
impl amqprs::consumer::AsyncConsumer for NoopConsumer {
    async fn consume(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _deliver: amqprs::Deliver,
        _props: amqprs::BasicProperties,
        _content: Vec<u8>,
    ) {
    }
}
