//! provision, submit and results through the `tasklane` binary, in a vhost
//! of its own; the test itself plays the endpoint with a raw AMQP client.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use amqprs::channel::BasicGetArguments;
use bytes::Bytes;
use tasklane_core::{decode_task, encode_result, EndpointId, ResultStatus, TaskLimits, TaskResult};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_tests::Vhost;

fn tasklane(url: &str, store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["--amqp", url, "--store", store.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn assert_ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

/// Takes every task from `E.tasks` and answers it as endpoint `E` would,
/// upper-casing the payload; returns the task ids.
async fn play_endpoint(url: &str, e: &EndpointId) -> BTreeSet<String> {
    let conn = amqp::connect(&ConnectOptions::parse(url).unwrap()).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    let limits = TaskLimits { max_body_bytes: 1 << 20, max_headers: 8 };
    let mut ids = BTreeSet::new();
    let mut empty_polls = 0;
    while empty_polls < 20 {
        let Some((get, props, body)) =
            channel.basic_get(BasicGetArguments::new(&e.task_queue()).no_ack(true).finish()).await.unwrap()
        else {
            empty_polls += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = get;
        let task = decode_task(&amqp::raw_message(&props, body), limits).unwrap();
        assert_eq!(task.kind.as_deref(), Some("shout"));
        let r = TaskResult {
            task: task.id.clone(),
            status: ResultStatus::Ok,
            body: Bytes::from(task.body.to_ascii_uppercase()),
        };
        let raw = encode_result(e, &r);
        let props = amqp::publish_properties(&raw).unwrap();
        channel.basic_publish(props, raw.body.to_vec(), amqp::publish_args("results", &e.result_key())).await.unwrap();
        ids.insert(task.id.to_string());
    }
    channel.close().await.unwrap();
    conn.close().await.unwrap();
    ids
}

#[tokio::test]
async fn provision_submit_results_round_trip() {
    let vhost = Vhost::create().unwrap();
    let url = vhost.url();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("service");

    let out = tasklane(&url, &store, &["provision", "ep-1", "--queue-type", "classic"]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("provisioned ep-1"), "{}", stdout(&out));

    let out = tasklane(&url, &store, &["submit", "ep-1", "--count", "40", "--size", "10", "--kind", "shout"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "submitted 40 tasks to ep-1\n");
    let file = dir.path().join("tasks.txt");
    std::fs::write(&file, "alpha\n\nbeta\n").unwrap();
    let out = tasklane(&url, &store, &["submit", "ep-1", "--file", file.to_str().unwrap(), "--kind", "shout"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "submitted 2 tasks to ep-1\n");

    let answered = play_endpoint(&url, &EndpointId::new("ep-1").unwrap()).await;
    assert_eq!(answered.len(), 42);

    let out = tasklane(&url, &store, &["results", "--count", "42", "--timeout", "30", "--json"]);
    assert_ok(&out);
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 42);
    let got: BTreeSet<String> = lines.iter().map(|v| v["task_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, answered, "every task answered once");
    assert!(lines.iter().all(|v| v["endpoint"] == "ep-1" && v["status"] == "ok"));
    let payloads: BTreeSet<&str> = lines.iter().map(|v| v["payload"].as_str().unwrap()).collect();
    assert!(payloads.contains("ALPHA") && payloads.contains("BETA") && payloads.contains("TASK-0 TAS"));

    // Nothing left: a further result would be a timeout (exit 3).
    let out = tasklane(&url, &store, &["results", "--count", "1", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 of 1"));
}

#[tokio::test]
async fn submit_to_an_unprovisioned_endpoint_fails_with_one_line() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = tasklane(&vhost.url(), dir.path(), &["submit", "nobody", "--count", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("not provisioned") && stderr.contains("tasklane provision nobody"), "{stderr}");
}

#[test]
fn an_unreachable_broker_is_a_runtime_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = tasklane("amqp://guest:guest@127.0.0.1:1/%2f", dir.path(), &["provision", "ep"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("cannot connect to amqp://guest:***@127.0.0.1:1/%2f"), "{stderr}");
}

#[test]
fn results_before_any_provisioning_fails_with_a_hint() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = tasklane(&vhost.url(), dir.path(), &["results", "--count", "1", "--timeout", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("404") && stderr.contains("tasklane provision"), "{stderr}");
}
