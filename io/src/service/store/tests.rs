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
