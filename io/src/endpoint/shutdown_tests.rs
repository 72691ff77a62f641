//! Bounded shutdown (SPEC §4): `Endpoint::shutdown` returns within the
//! configured grace whatever the broker and the disk do. The shipped driver
//! and amqprs adapter run against a broker that accepts TCP and never says
//! a word, and a spool port whose disk never commits.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tasklane_core::{Config, EndpointId, OutboxSeq, ResultStatus, SpoolSnapshot, SpoolWrite, StoredTask, Task, TaskId};

use super::ports::{InputSink, NoObserver, SpoolPort};
use super::rabbitmq::AmqprsBroker;
use super::Endpoint;
use crate::amqp::ConnectOptions;

/// A disk that takes writes and never commits one. Like the LMDB port on a
/// hung disk, its close gives up at the grace it is given.
struct StalledSpool {
    writes: std::rc::Rc<std::cell::Cell<usize>>,
    /// What it held at start (its last commit).
    held: Task,
}

impl SpoolPort for StalledSpool {
    fn start(&mut self, _inputs: InputSink) {}

    fn write(&mut self, _write: SpoolWrite) {
        self.writes.set(self.writes.get() + 1);
    }

    fn task(&mut self, arrival: u64) -> Result<Option<Task>, String> {
        Ok((arrival == 0).then(|| self.held.clone()))
    }

    fn result_bodies(&mut self, seqs: &[OutboxSeq]) -> Result<Vec<Option<Bytes>>, String> {
        Ok(vec![None; seqs.len()]) // it never committed a result
    }

    async fn close(self, grace: Duration) {
        tokio::time::sleep(grace).await;
    }
}

/// A broker address that accepts connections and answers nothing.
fn black_hole() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_ends_within_its_grace_with_a_silent_broker_and_a_stalled_spool() {
    let (hole, url) = black_hole();
    let accepted = std::thread::spawn(move || {
        // Hold every accepted socket open, silent.
        let mut held = Vec::new();
        for s in hole.incoming().take(4) {
            held.push(s);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let mut cfg = Config::new(EndpointId::new("ep-shutdown").unwrap());
    cfg.shutdown_grace = Duration::from_secs(2);
    let task = Task { id: TaskId::new("t-1").unwrap(), kind: None, body: Bytes::from_static(b"p") };
    let stored = StoredTask { arrival: 0, task: task.clone() };
    let snapshot = SpoolSnapshot { inbox: vec![stored.meta()], arrival_counter: 1, ..Default::default() };
    let broker = AmqprsBroker { brokers: vec![ConnectOptions::parse(&url).unwrap()] };
    let writes = std::rc::Rc::default();
    let spool = StalledSpool { writes: std::rc::Rc::clone(&writes), held: task };
    let (endpoint, driver) = Endpoint::start(cfg, snapshot, broker, spool, NoObserver).unwrap();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            tokio::task::spawn_local(driver);
            let task = endpoint.next_task().await.expect("the spooled task is handed off");
            endpoint.complete(&task.id, ResultStatus::Ok, "done").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(writes.get() >= 1, "the result's write was issued (and never commits)");
            let started = Instant::now();
            endpoint.shutdown().await;
            let took = started.elapsed();
            eprintln!("shutdown with a silent broker and a stalled spool took {took:?} (grace 2 s)");
            assert!(took <= Duration::from_millis(2_200), "shutdown took {took:?}, grace 2 s");
        })
        .await;
    drop(accepted);
}
