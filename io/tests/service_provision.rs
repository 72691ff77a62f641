//! `provision` declares SPEC §2's topology, and declaring it again changes
//! nothing, for classic and quorum task queues; quorum is the default, with
//! a delivery limit that dead-letters a message redelivered without end; a
//! task queue of another type or limit is refused with a clear message.

use std::time::Duration;

use amqprs::channel::{BasicConsumeArguments, BasicPublishArguments, BasicRejectArguments};
use amqprs::BasicProperties;
use tasklane_core::EndpointId;
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::service::{provision, Brokers, Provisioned, QueueType, ServiceError, TaskQueue};
use tasklane_tests::Vhost;

async fn provision_twice_and_check(queue: TaskQueue) {
    let vhost = Vhost::create().unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("ep-1").unwrap();
    let made = provision(&conn, &e, queue).await.unwrap();
    let t = queue.queue_type;
    assert_eq!(made, Provisioned { task_queue: queue, results: t, dead: t });
    assert_eq!(provision(&conn, &e, queue).await.expect("provisioning twice is harmless"), made);

    let q = vhost.queue("ep-1.tasks").unwrap().expect("task queue exists");
    assert_eq!(q.kind, t.as_str());
    assert!(q.durable);
    assert_eq!(q.arguments["x-single-active-consumer"], true);
    assert_eq!(q.arguments["x-dead-letter-exchange"], "tasklane.dead");
    assert_eq!(q.arguments["x-queue-type"], t.as_str());
    match t {
        QueueType::Quorum => assert_eq!(q.arguments["x-delivery-limit"], 20),
        QueueType::Classic => assert!(q.arguments.get("x-delivery-limit").is_none()),
    }
    for name in ["results", "tasklane.dead"] {
        let shared = vhost.queue(name).unwrap().expect(name);
        assert!(shared.durable, "{name} is durable");
        assert_eq!(shared.kind, t.as_str(), "{name} is created with the task queue's type");
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn provision_is_idempotent_for_classic_queues() {
    provision_twice_and_check(QueueType::Classic.into()).await;
}

#[tokio::test]
async fn provision_is_idempotent_for_quorum_queues_the_default() {
    assert_eq!(TaskQueue::default(), TaskQueue::quorum());
    assert_eq!(TaskQueue::from(QueueType::default()).delivery_limit, Some(TaskQueue::DEFAULT_DELIVERY_LIMIT));
    provision_twice_and_check(TaskQueue::default()).await;
}

#[tokio::test]
async fn provision_refuses_to_change_the_queue_type_and_says_how_to_go_on() {
    let vhost = Vhost::create().unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("ep-2").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();
    let err = provision(&conn, &e, QueueType::Quorum).await.unwrap_err();
    assert!(matches!(err, ServiceError::QueueMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "queue ep-2.tasks exists as a classic queue, not quorum, and RabbitMQ cannot change a queue's type: \
         provision it as classic (--queue-type classic), or move its tasks away, delete it and provision again"
    );
    // The other way round, and the connection is still fine for more work.
    let f = EndpointId::new("ep-3").unwrap();
    provision(&conn, &f, QueueType::Quorum).await.unwrap();
    let err = provision(&conn, &f, QueueType::Classic).await.unwrap_err().to_string();
    assert!(err.starts_with("queue ep-3.tasks exists as a quorum queue, not classic"), "{err}");
    let err = provision(&conn, &f, TaskQueue::quorum().delivery_limit(Some(50))).await.unwrap_err().to_string();
    assert!(err.starts_with("queue ep-3.tasks exists with delivery limit 20, not 50"), "{err}");
    assert!(err.contains("(--delivery-limit 20)"), "{err}");
    // The shared queues, classic since ep-2, stay as they are.
    let made = provision(&conn, &EndpointId::new("ep-4").unwrap(), QueueType::Quorum).await.unwrap();
    assert_eq!((made.results, made.dead), (QueueType::Classic, QueueType::Classic));
    assert_eq!(vhost.queue("ep-4.tasks").unwrap().unwrap().kind, "quorum");
    assert!(conn.is_open());
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_task_redelivered_past_the_delivery_limit_lands_in_tasklane_dead() {
    let vhost = Vhost::create().unwrap();
    let brokers = Brokers::parse(&vhost.url()).unwrap();
    let e = EndpointId::new("ep-5").unwrap();
    brokers.provision(&e, TaskQueue::quorum().delivery_limit(Some(2))).await.unwrap();
    let (conn, _) = brokers.connect().await.unwrap();
    let ch = conn.open_channel(None).await.unwrap();
    let props = BasicProperties::default().with_message_id("poison").with_persistence(true).finish();
    ch.basic_publish(props, b"x".to_vec(), BasicPublishArguments::new("", "ep-5.tasks")).await.unwrap();
    // Delivered and put back three times: the third return is past the limit.
    // (basic.get does not work on a queue with a single active consumer.)
    let consume = BasicConsumeArguments::new("ep-5.tasks", "").manual_ack(true).finish();
    let (_, mut rx) = ch.basic_consume_rx(consume).await.unwrap();
    let mut deliveries = 0;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        deliveries += 1;
        let tag = msg.deliver.unwrap().delivery_tag();
        ch.basic_reject(BasicRejectArguments::new(tag, true)).await.unwrap();
    }
    assert_eq!(deliveries, 3, "delivered once, then redelivered up to the limit of 2");
    let dead = vhost.peek_messages("tasklane.dead", 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id.as_deref(), Some("poison"));
    assert_eq!(dead[0].headers["x-death"][0]["reason"], "delivery_limit");
    let _ = ch.close().await;
    conn.close().await.unwrap();
}
