//! One process per spool, with the real CLI: a second `tasklane endpoint`
//! on a spool in use fails at once with one line naming the directory and
//! the pid (exit 1); the read-only tools work beside the running one; and
//! the lock of an endpoint killed with SIGKILL does not block a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use tasklane_io::spool::LOCK_FILE;
use tasklane_tests::{Tasklane, Vhost};

/// Waits until the spool's lock file names `pid`.
fn wait_for_lock(spool: &Path, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("{pid}\n");
    while std::fs::read_to_string(spool.join(LOCK_FILE)).ok().as_deref() != Some(want.as_str()) {
        assert!(Instant::now() < deadline, "process {pid} never took the lock of {}", spool.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_endpoint_on_a_spool_in_use_is_refused_and_a_killed_ones_lock_does_not_block_a_restart() {
    let vhost = Vhost::create().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Tasklane::new(vhost.url(), dir.path().join("service"));
    cli.run_ok(&["provision", "ep-lock"]);
    let spool = dir.path().join("spool");
    let spool_arg = spool.to_str().unwrap();

    let mut first = cli.endpoint("ep-lock", &spool, &[]);
    wait_for_lock(&spool, first.pid());

    let start = Instant::now();
    let second = cli.run(&["endpoint", "ep-lock", "--spool", spool_arg]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    // The endpoint's log of its settings comes first; the failure is one line.
    let failures: Vec<&str> = stderr.lines().filter(|l| l.starts_with("tasklane: ")).collect();
    assert_eq!(
        failures,
        [format!(
            "tasklane: cannot start endpoint ep-lock: spool {spool_arg} is in use by process {} (tasklane.lock)",
            first.pid()
        )],
        "{stderr}"
    );
    assert!(stderr.ends_with(&format!("{}\n", failures[0])), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(10), "refused at once, not after {:?}", start.elapsed());
    assert!(first.alive(), "the first endpoint runs on: {}", first.stderr());

    // The read-only tools work beside it.
    let inspect = cli.run_ok(&["spool", "inspect", spool_arg]);
    assert!(inspect.contains("inbox: 0 tasks"), "{inspect}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cli.run(&["status", "ep-lock", "--spool", spool_arg]);
        if status.status.code() == Some(0) {
            assert!(String::from_utf8_lossy(&status.stdout).contains(&format!("pid {}", first.pid())));
            break;
        }
        assert!(Instant::now() < deadline, "status: {}", String::from_utf8_lossy(&status.stdout));
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGKILL: the kernel drops the lock with the process.
    first.kill();
    let mut restarted = cli.endpoint("ep-lock", &spool, &[]);
    wait_for_lock(&spool, restarted.pid());
    cli.run_ok(&["submit", "ep-lock", "--count", "3", "--size", "8"]);
    let (results, complete) = cli.results(3, Duration::from_secs(60));
    assert!(complete, "{} of 3 results; endpoint stderr:\n{}", results.len(), restarted.stderr());
    assert_eq!(restarted.terminate(Duration::from_secs(20)), Some(0), "{}", restarted.stderr());
}
