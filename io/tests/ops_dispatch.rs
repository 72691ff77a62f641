//! Handler dispatch by task kind on a real endpoint: a serial kind never
//! runs two tasks at once and keeps their order, a pooled kind runs up to
//! its limit and no more, and tasks no handler takes (unknown kind, no
//! kind, a panicking handler) come back as `failed` results that say why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tasklane_core::{EndpointId, ResultStatus, Task, TaskId};
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::dispatch::{DispatchError, Dispatcher};
use tasklane_io::endpoint::{Endpoint, EndpointConfig};
use tasklane_io::service::{provision, AcceptedResult, QueueType, Results, ResultsOptions, Submitter, TaskStore};
use tasklane_tests::Vhost;

/// Counts how many run at once, and the most ever.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

fn task(id: String, kind: Option<&str>) -> Task {
    Task { id: TaskId::new(id.clone()).unwrap(), kind: kind.map(str::to_owned), body: Bytes::from(id) }
}

#[tokio::test]
async fn tasks_run_by_kind_within_their_limits_and_the_rest_fail_with_a_reason() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conn = amqp::connect(&ConnectOptions::parse(&vhost.url()).unwrap()).await.unwrap();
    let e = EndpointId::new("dispatch-ep").unwrap();
    provision(&conn, &e, QueueType::Classic).await.unwrap();

    // Submitted interleaved: 12 pooled, 6 serial, 2 unknown, 1 without a kind, 1 that panics.
    let mut tasks = Vec::new();
    for i in 0..12 {
        tasks.push(task(format!("pool-{i:02}"), Some("pool")));
        if i % 2 == 0 {
            tasks.push(task(format!("serial-{:02}", i / 2), Some("serial")));
        }
    }
    tasks.push(task("mystery-1".into(), Some("mystery")));
    tasks.push(task("kindless".into(), None));
    tasks.push(task("mystery-2".into(), Some("mystery")));
    tasks.push(task("boom".into(), Some("boom")));
    let total = tasks.len();
    let store = TaskStore::open(dir.path().join("service")).unwrap();
    let mut submitter = Submitter::open(&conn, store.clone()).await.unwrap();
    assert_eq!(submitter.submit_all(&e, tasks, |_| {}).await.unwrap(), total);
    submitter.close().await;

    let serial = Arc::new(Gauge::default());
    let pool = Arc::new(Gauge::default());
    let serial_order = Arc::new(Mutex::new(Vec::new()));
    let mut dispatcher = Dispatcher::new();
    {
        let (gauge, order) = (serial.clone(), serial_order.clone());
        dispatcher
            .register("serial", 1, move |t: Task| {
                let (gauge, order) = (gauge.clone(), order.clone());
                async move {
                    gauge.enter();
                    order.lock().unwrap().push(t.id.to_string());
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    gauge.leave();
                    Ok::<_, Bytes>(Bytes::from(format!("serial did {}", t.id)))
                }
            })
            .unwrap();
    }
    {
        let gauge = pool.clone();
        dispatcher
            .register("pool", 3, move |t: Task| {
                let gauge = gauge.clone();
                async move {
                    gauge.enter();
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    gauge.leave();
                    if t.id.as_str().ends_with('7') {
                        Err(Bytes::from("seven is unlucky"))
                    } else {
                        Ok(t.body)
                    }
                }
            })
            .unwrap();
    }
    dispatcher.register("boom", 1, |_t: Task| async move { panic!("kaboom") as Result<Bytes, Bytes> }).unwrap();
    assert_eq!(
        dispatcher.register("pool", 2, |t: Task| async move { Ok::<_, Bytes>(t.body) }),
        Err(DispatchError::Duplicate("pool".into()))
    );
    assert_eq!(dispatcher.kinds(), vec!["boom", "pool", "serial"]);

    let endpoint = Arc::new(
        Endpoint::open(EndpointConfig::new(&vhost.url(), e.as_str(), dir.path().join("spool")).unwrap()).await.unwrap(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move { dispatcher.run(endpoint, stop_rx).await })
    };

    let mut results = Results::open(&conn, store, ResultsOptions::default()).await.unwrap();
    let mut got: BTreeMap<String, AcceptedResult> = BTreeMap::new();
    while got.len() < total {
        let r = results.next_timeout(Duration::from_secs(60)).await.unwrap().expect("every task gets a result");
        got.insert(r.task.to_string(), r);
    }
    results.close().await.unwrap();
    let _ = stop_tx.send(());
    let stats = running.await.unwrap();
    endpoint.shutdown().await;
    let _ = conn.close().await; // amqprs 2.1.5 may lose its own close-ok (see endpoint_amqp.rs)

    assert_eq!(serial.max(), 1, "the serial kind ran two tasks at once");
    assert_eq!(pool.max(), 3, "the pooled kind must reach its limit of 3 and never pass it");
    let want_order: Vec<String> = (0..6).map(|i| format!("serial-{i:02}")).collect();
    assert_eq!(*serial_order.lock().unwrap(), want_order, "a serial kind keeps arrival order");

    let status = |id: &str| (got[id].status, String::from_utf8_lossy(&got[id].body).into_owned());
    assert_eq!(status("serial-03"), (ResultStatus::Ok, "serial did serial-03".into()));
    assert_eq!(status("pool-05"), (ResultStatus::Ok, "pool-05".into()));
    assert_eq!(status("pool-07"), (ResultStatus::Failed, "seven is unlucky".into()));
    for id in ["mystery-1", "mystery-2"] {
        let (s, body) = status(id);
        assert_eq!(s, ResultStatus::Failed);
        assert_eq!(
            body,
            "no handler for task kind \"mystery\" on this endpoint (kinds handled: \"boom\", \"pool\", \"serial\")"
        );
    }
    let (s, body) = status("kindless");
    assert_eq!(s, ResultStatus::Failed);
    assert!(body.starts_with("task has no kind (tasklane-kind header)"), "{body}");
    let (s, body) = status("boom");
    assert_eq!(s, ResultStatus::Failed);
    assert_eq!(body, "the handler of kind \"boom\" panicked: kaboom");

    assert_eq!(stats.unknown, 3);
    assert_eq!(stats.panicked, 1);
    assert_eq!(stats.completed.get("pool"), Some(&12));
    assert_eq!(stats.completed.get("serial"), Some(&6));
}
