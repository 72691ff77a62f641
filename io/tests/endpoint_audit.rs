//! The auditor bites on the real endpoint too: an endpoint built to ack
//! before its spool commits (core's `sabotage` switch) is caught against
//! the real broker by the same invariant the core harness, the fuzz targets
//! and the simulation name.

mod endpoint_support;

use std::time::Duration;

use endpoint_support::*;
use tasklane_io::endpoint::audit::Audit;
use tasklane_io::endpoint::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_acks_before_the_commit_is_caught_by_the_auditor() {
    Topology::run(|topo| async move {
        let msgs: Vec<_> = (0..20).map(|i| task_message(&format!("s{i}"), "p")).collect();
        topo.publish(&msgs).await;
        let spool = tempfile::tempdir().unwrap();
        let mut config = topo.config(&topo.url, spool.path());
        config.lane.sabotage.ack_before_commit = true;
        let (audit, report) = Audit::new();
        let endpoint = Endpoint::open_observed(config, audit).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while report.violation().is_none() {
            assert!(std::time::Instant::now() < deadline, "the sabotage was not caught: {:?}", endpoint.counters());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let v = report.violation().unwrap();
        assert_eq!(v.invariant, "no_ack_before_durable", "{v}");
        endpoint.shutdown().await;
    })
    .await;
}
