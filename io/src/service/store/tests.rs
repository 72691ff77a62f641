//! The store across a reopen: task states, withdrawals and the dedup window.

use super::*;

fn id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

#[test]
fn tracks_states_and_window_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = EndpointId::new("e1").unwrap();
    {
        let store = TaskStore::open(dir.path()).unwrap();
        store
            .write(&[
                StoreWrite::Submitted { task: id("a"), endpoint: e.clone() },
                StoreWrite::Submitted { task: id("b"), endpoint: e.clone() },
                StoreWrite::Submitted { task: id("c"), endpoint: e.clone() },
                StoreWrite::Withdrawn(id("c")),
            ])
            .unwrap();
        store
            .write(&[
                StoreWrite::State(id("a"), TaskState::ResultReceived(ResultStatus::Failed)),
                StoreWrite::Seen { task: id("a"), forget: None },
                StoreWrite::Seen { task: id("b"), forget: Some(id("a")) },
            ])
            .unwrap();
    }
    let store = TaskStore::open(dir.path()).unwrap();
    let all = store.list(None).unwrap();
    assert_eq!(
        all.iter().map(|t| (t.id.as_str(), t.state)).collect::<Vec<_>>(),
        vec![("a", TaskState::ResultReceived(ResultStatus::Failed)), ("b", TaskState::Submitted)]
    );
    assert_eq!(store.owner(&id("b")).unwrap(), Some(e));
    assert_eq!(store.owner(&id("c")).unwrap(), None);
    assert_eq!(store.seen().unwrap(), vec![id("b")]);
    assert!(store.list(Some(&EndpointId::new("other").unwrap())).unwrap().is_empty());
}

#[test]
fn the_fleet_keeps_a_record_per_process_and_drops_superseded_ones() {
    use crate::fleet::{EndpointState, StatusReport};
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path()).unwrap();
    let e = EndpointId::new("e1").unwrap();
    let now = now_ms();
    let report = |state, pid, seq, sent_ago: u64| {
        let mut r = StatusReport::new(&e, state);
        (r.pid, r.seq, r.interval_secs, r.sent_at_ms) = (pid, seq, 1, now - sent_ago);
        FleetRecord { report: r, seen_ms: now }
    };
    let kept = |store: &TaskStore| -> Vec<(u32, u64, EndpointState)> {
        store.fleet().unwrap().iter().map(|f| (f.report.pid, f.report.seq, f.report.state)).collect()
    };
    // An active process and its standby: a record each.
    store
        .record_reports(&[report(EndpointState::Consuming, 7, 3, 100), report(EndpointState::Standby, 8, 2, 100)])
        .unwrap();
    assert_eq!(kept(&store), [(7, 3, EndpointState::Consuming), (8, 2, EndpointState::Standby)]);
    // A redelivered older report of pid 7 changes nothing.
    store.record_reports(&[report(EndpointState::Connecting, 7, 1, 5_000)]).unwrap();
    assert_eq!(kept(&store), [(7, 3, EndpointState::Consuming), (8, 2, EndpointState::Standby)]);
    // pid 7 is reused by a new process (seq 1 again, sent later): it replaces the old record.
    store.record_reports(&[report(EndpointState::Standby, 7, 1, 0)]).unwrap();
    assert_eq!(kept(&store), [(7, 1, EndpointState::Standby), (8, 2, EndpointState::Standby)]);
    // pid 8 went silent long ago; pid 7's next report drops it, and a closed one too.
    store.record_reports(&[report(EndpointState::Standby, 8, 3, 10_000)]).unwrap();
    store.record_reports(&[report(EndpointState::Closed, 9, 4, 0)]).unwrap();
    assert_eq!(kept(&store).len(), 3, "a stale or closed report removes nothing");
    store.record_reports(&[report(EndpointState::Consuming, 7, 2, 0)]).unwrap();
    assert_eq!(kept(&store), [(7, 2, EndpointState::Consuming)]);
    assert_eq!(store.forget_endpoint("e1").unwrap(), 1);
    assert!(kept(&store).is_empty());
    assert_eq!(store.forget_endpoint("e1").unwrap(), 0);
}
