//! `amqps://` against the local broker's TLS listener (127.0.0.1:5671),
//! whose certificate `scripts/ensure-rabbitmq.sh` makes with a test CA in
//! /var/lib/tasklane-test-tls (or `$TASKLANE_TEST_TLS_DIR`).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tasklane_core::{EndpointId, ResultStatus, Task, TaskId};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tasklane_io::service::{provision, QueueType, Results, ResultsOptions, Submitter, TaskStore};
use tasklane_tests::{percent_encode, Tasklane, Vhost};

fn test_ca() -> PathBuf {
    let dir = std::env::var("TASKLANE_TEST_TLS_DIR").unwrap_or_else(|_| "/var/lib/tasklane-test-tls".into());
    let ca = PathBuf::from(dir).join("ca.pem");
    assert!(ca.exists(), "{} is missing: run scripts/ensure-rabbitmq.sh", ca.display());
    ca
}

fn amqps_url(host: &str, vhost: &Vhost) -> String {
    format!("amqps://guest:guest@{host}:5671/{}", percent_encode(vhost.name()))
}

#[tokio::test]
async fn an_endpoint_round_trip_runs_over_tls() {
    let vhost = Vhost::create().unwrap();
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?cacertfile={}", amqps_url("127.0.0.1", &vhost), percent_encode(ca.to_str().unwrap()));
    let opts = ConnectOptions::parse(&url).unwrap();
    let (conn, info) = amqp::connect_with_info(&opts).await.unwrap();
    assert!(info.tls);
    assert_eq!(info.peer, "127.0.0.1:5671".parse().unwrap());
    assert!(info.broker.starts_with("RabbitMQ"), "{info:?}");

    let e = EndpointId::new("tls-ep").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    let store = TaskStore::open(dir.path().join("service")).unwrap();
    let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap();
    let ids: Vec<TaskId> = (0..5).map(|i| TaskId::new(format!("t-{i}")).unwrap()).collect();
    let tasks = ids.iter().map(|id| Task { id: id.clone(), kind: None, body: Bytes::from(format!("x{id}")) });
    assert_eq!(submitter.submit_all(&e, tasks, |_| {}).await.unwrap(), 5);

    let endpoint =
        Endpoint::open(EndpointConfig::new(&url, e.as_str(), dir.path().join("spool")).unwrap()).await.unwrap();
    for _ in 0..5 {
        let task = tokio::time::timeout(Duration::from_secs(30), endpoint.next_task()).await.unwrap().unwrap();
        endpoint.complete(&task.id, ResultStatus::Ok, task.body.to_ascii_uppercase()).await.unwrap();
    }
    let mut results = Results::open(&conn, store, ResultsOptions::default()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let r = results.next_timeout(Duration::from_secs(30)).await.unwrap().expect("a result within 30 s");
        got.push((r.task.to_string(), r.body));
    }
    got.sort();
    let want: Vec<(String, Bytes)> =
        ids.iter().map(|id| (id.to_string(), Bytes::from(format!("X{}", id.as_str().to_uppercase())))).collect();
    assert_eq!(got, want);
    results.close().await.unwrap();
    endpoint.shutdown().await;
    submitter.close().await;
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_broker_certificate_from_an_untrusted_ca_is_refused() {
    let vhost = Vhost::create().unwrap();
    // No cacertfile: only the public web roots are trusted.
    let opts = ConnectOptions::parse(&amqps_url("127.0.0.1", &vhost)).unwrap();
    let Err(err) = amqp::connect(&opts).await else { panic!("the test CA is not a web root") };
    let err = err.to_string();
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    // The certificate names localhost and 127.0.0.1, not another name.
    let opts =
        ConnectOptions::parse(&format!("{}?server_name_indication=broker.example", amqps_url("127.0.0.1", &vhost)))
            .unwrap()
            .with_tls_ca(test_ca());
    let Err(err) = amqp::connect(&opts).await else { panic!("the certificate is not for broker.example") };
    let err = err.to_string();
    assert!(err.contains("certificate") || err.contains("NotValidForName"), "{err}");
}

/// The CLI over TLS with `--tls-ca`; `localhost` resolves to ::1 first on
/// many machines, where the broker does not listen: the next address wins.
#[test]
fn the_cli_speaks_amqps_with_tls_ca() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(amqps_url("localhost", &vhost), dir.path().join("service"));
    let ca = test_ca();
    let ca = ca.to_str().unwrap();
    let out = cli.run_ok(&["--tls-ca", ca, "provision", "tls-cli"]);
    assert!(out.starts_with("provisioned tls-cli"), "{out}");
    let out = cli.run_ok(&["--tls-ca", ca, "submit", "tls-cli", "--count", "3"]);
    assert_eq!(out, "submitted 3 tasks to tls-cli\n");
    let refused = cli.run(&["submit", "tls-cli", "--count", "1"]);
    assert_eq!(refused.status.code(), Some(1), "without --tls-ca the test CA is not trusted");
}
