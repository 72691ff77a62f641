//! The broker closes the endpoint's connection mid-stream: the endpoint
//! reconnects on its own, nothing is lost and no task is handed off twice.

mod endpoint_support;

use std::collections::BTreeSet;
use std::time::Duration;

use endpoint_support::*;
use tasklane_core::{ResultStatus, Status};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_is_made_again_and_nothing_is_lost() {
    Topology::run(|topo| async move {
        let n = 60;
        let msgs: Vec<_> = (0..n).map(|i| task_message(&format!("r{i}"), "p")).collect();
        topo.publish(&msgs[..n / 2]).await;
        let spool = tempfile::tempdir().unwrap();
        let endpoint = open(topo.config(&topo.url, spool.path())).await;
        let mut handed = BTreeSet::new();
        for t in take_tasks(&endpoint, n / 2, WAIT).await {
            assert!(handed.insert(t.id.clone()));
            endpoint.complete(&t.id, ResultStatus::Ok, "before").await.unwrap();
        }

        let name = format!("tasklane endpoint {}", topo.id);
        let mut status = endpoint.status();
        assert_eq!(tokio::task::spawn_blocking(move || broker_closes_connections(&name)).await.unwrap(), 1);
        let down = wait_status(status.clone(), WAIT, |s| matches!(s, Status::Disconnected { .. })).await;
        let Status::Disconnected { reason, .. } = down else { unreachable!() };
        assert!(reason.contains("320"), "the broker's CONNECTION_FORCED is reported: {reason}");
        status.mark_unchanged();
        wait_status(status, WAIT, |s| *s == Status::Consuming).await;

        topo.publish(&msgs[n / 2..]).await;
        for t in take_tasks(&endpoint, n / 2, WAIT).await {
            assert!(handed.insert(t.id.clone()), "{} handed off twice", t.id);
            endpoint.complete(&t.id, ResultStatus::Ok, "after").await.unwrap();
        }
        wait_counters(&endpoint, WAIT, |c| c.confirmed == n as u64).await;
        let c = endpoint.counters();
        assert_eq!((c.connections, c.handed_off), (2, n as u64));
        endpoint.shutdown().await;
        let results = topo.take(&topo.results, 2 * n, Duration::from_secs(3)).await;
        let ids: BTreeSet<_> = results.iter().map(|(_, m)| m.message_id.clone().unwrap()).collect();
        assert_eq!(ids.len(), n, "every task has its result (republished duplicates are allowed)");
    })
    .await;
}
