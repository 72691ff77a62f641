//! `Submitter`: confirmed, mandatory publishing; an unprovisioned endpoint is
//! an error, not a silent drop; the task store tracks what was submitted.

use bytes::Bytes;
use tasklane_core::{EndpointId, Task, TaskId};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{provision, QueueType, ServiceError, Submitter, TaskState, TaskStore};
use tasklane_tests::Vhost;

fn task(id: &str) -> Task {
    Task { id: TaskId::new(id).unwrap(), kind: Some("echo".into()), body: Bytes::from(format!("payload {id}")) }
}

#[tokio::test]
async fn submit_to_an_unprovisioned_endpoint_is_an_error() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path()).unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap();

    let nowhere = EndpointId::new("never-provisioned").unwrap();
    let err = submitter.submit(&nowhere, task("t-1")).await.unwrap_err();
    assert!(matches!(err, ServiceError::Unroutable { code: 312, .. }), "{err}");
    assert!(store.list(None).unwrap().is_empty(), "an unrouted task is not tracked");

    // The same submitter still works for a provisioned endpoint.
    let e = EndpointId::new("ep").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    submitter.submit(&e, task("t-2")).await.unwrap();
    assert_eq!(store.get(&TaskId::new("t-2").unwrap()).unwrap().unwrap().state, TaskState::Submitted);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn submit_all_pipelines_and_tracks_every_task() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path()).unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("ep").unwrap();
    // Classic: the management API cannot peek into a quorum queue with a
    // single active consumer.
    provision(&conn, &e, QueueType::Classic).await.unwrap();

    let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap().window(100);
    let mut reported = 0;
    let n = submitter.submit_all(&e, (0..2500).map(|i| task(&format!("t-{i}"))), |k| reported += k).await.unwrap();
    assert_eq!((n, reported), (2500, 2500));

    let counts = vhost.queue_counts("ep.tasks").await.unwrap().unwrap();
    assert_eq!(counts.ready, 2500, "every confirmed task is in the queue");
    let tracked = store.list(Some(&e)).unwrap();
    assert_eq!(tracked.len(), 2500);
    assert!(tracked.iter().all(|t| t.state == TaskState::Submitted && t.endpoint == e));

    let peeked = vhost.peek_messages("ep.tasks", 1).unwrap();
    assert_eq!(peeked[0].message_id.as_deref(), Some("t-0"));
    assert_eq!(peeked[0].properties["delivery_mode"], 2, "persistent");
    assert_eq!(peeked[0].headers["tasklane-kind"], "echo");
    assert_eq!(peeked[0].payload, b"payload t-0");
    conn.close().await.unwrap();
}
