//! `provision` declares SPEC §2's topology, and declaring it again changes
//! nothing, for classic and quorum task queues.

use tasklane_core::EndpointId;
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{provision, QueueType, ServiceError};
use tasklane_tests::Vhost;

async fn provision_twice_and_check(queue_type: QueueType) {
    let vhost = Vhost::create().unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("ep-1").unwrap();
    provision(&conn, &e, queue_type).await.unwrap();
    provision(&conn, &e, queue_type).await.expect("provisioning twice is harmless");

    let q = vhost.queue("ep-1.tasks").unwrap().expect("task queue exists");
    assert_eq!(q.kind, queue_type.as_str());
    assert!(q.durable);
    assert_eq!(q.arguments["x-single-active-consumer"], true);
    assert_eq!(q.arguments["x-dead-letter-exchange"], "tasklane.dead");
    assert_eq!(q.arguments["x-queue-type"], queue_type.as_str());
    for name in ["results", "tasklane.dead"] {
        assert!(vhost.queue(name).unwrap().expect(name).durable, "{name} is durable");
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn provision_is_idempotent_for_classic_queues() {
    provision_twice_and_check(QueueType::Classic).await;
}

#[tokio::test]
async fn provision_is_idempotent_for_quorum_queues() {
    provision_twice_and_check(QueueType::Quorum).await;
}

#[tokio::test]
async fn provision_refuses_to_change_the_queue_type() {
    let vhost = Vhost::create().unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("ep-2").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    let err = provision(&conn, &e, QueueType::Quorum).await.unwrap_err();
    match err {
        ServiceError::Amqp(e) => assert_eq!(e.reply_code(), Some(406), "PRECONDITION_FAILED: {e}"),
        other => panic!("expected the broker's refusal, got {other}"),
    }
    conn.close().await.unwrap();
}
