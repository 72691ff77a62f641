//! Users' own workers in the simulation, through the public API: a correct
//! one passes the seeds; a wrong result and a worker that never answers are
//! each caught, a failure with a repro line naming this test.

use std::time::Duration;

use bytes::Bytes;
use tasklane_core::ResultStatus;
use tasklane_sim::check::Check;
use tasklane_sim::run::Outcome;
use tasklane_sim::worker::{worker, Worker};
use tasklane_sim::workload::Workload;

/// Doubles the number in each task, after some work; `bug` says which
/// number it gets wrong, if any.
fn doubler(bug: Option<u64>) -> Worker {
    worker(move |endpoint, mut ctx| async move {
        while let Some(task) = endpoint.next_task().await {
            let n: u64 = std::str::from_utf8(&task.body).unwrap().parse().unwrap();
            let work = Duration::from_millis(ctx.rng.range(1, 40));
            let endpoint = endpoint.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(work).await;
                let answer = if Some(n) == bug { n } else { 2 * n };
                let _ = endpoint.complete(&task.id, ResultStatus::Ok, answer.to_string()).await;
            });
        }
    })
}

fn doubling() -> Workload {
    Workload::new(
        25,
        |i, _| (None, Bytes::from(i.to_string())),
        |task, status, body| {
            let n: u64 = std::str::from_utf8(&task.body).unwrap().parse().unwrap();
            let want = (2 * n).to_string();
            if status == ResultStatus::Ok && body == want.as_bytes() {
                Ok(())
            } else {
                Err(format!("{n} doubled is {want}, got {:?}", String::from_utf8_lossy(body)))
            }
        },
    )
}

#[test]
fn a_correct_worker_passes_every_seed_with_the_faults_on() {
    Check::new(doubler(None)).workload(doubling()).seeds(0..12).assert_passes();
}

#[test]
fn a_wrong_result_is_caught_and_the_repro_line_names_this_test() {
    let tally = Check::new(doubler(Some(7))).workload(doubling()).seeds(0..3).run();
    assert_eq!(tally.failures.len(), 3, "every seed submits task 7");
    let first = &tally.failures[0];
    match &first.outcome {
        Outcome::Expectation { task, problem } => {
            assert_eq!(task, "task-0007");
            assert!(problem.contains("7 doubled is 14"), "{problem}");
        }
        other => panic!("expected the expectation to fail, got {other}"),
    }
    let panicked = std::panic::catch_unwind(|| {
        Check::new(doubler(Some(7))).workload(doubling()).seeds(0..1).assert_passes();
    });
    let message = panicked.expect_err("assert_passes fails").downcast::<String>().unwrap();
    assert!(
        message.contains("reproduce: TASKLANE_SIM_SEEDS=0 cargo test -p tasklane-sim --release -- a_wrong_result_is_caught_and_the_repro_line_names_this_test --exact"),
        "{message}"
    );
}

#[test]
fn a_worker_that_never_answers_is_a_liveness_failure() {
    let silent = worker(|endpoint, _| async move {
        let mut held = Vec::new();
        while let Some(task) = endpoint.next_task().await {
            held.push(task); // never completed
        }
    });
    let tally = Check::new(silent).seeds(0..1).heal_limit(Duration::from_secs(5)).run();
    assert!(matches!(tally.failures[0].outcome, Outcome::Liveness { .. }), "{}", tally.failures[0].outcome);
}
