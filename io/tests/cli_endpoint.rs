//! `tasklane endpoint` end to end in a vhost of its own: `--exec` maps
//! stdout and exit status to results, SIGTERM stops it cleanly, the spool
//! is drained afterwards, and `--workers`/`workers` bound how many
//! commands run side by side.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tasklane_tests::Vhost;

fn tasklane(url: &str, store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasklane"));
    c.args(["--amqp", url, "--store", store.to_str().unwrap()]).env_remove("TASKLANE_AMQP_URL").env_remove("RUST_LOG");
    c
}

fn run_ok(mut c: Command) -> String {
    let out: Output = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// SIGTERM, then the exit code within `timeout` (None: had to be killed).
fn terminate(child: &mut Child, timeout: Duration) -> Option<i32> {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn exec_endpoint_answers_tasks_and_stops_cleanly_on_sigterm() {
    let vhost = Vhost::create().unwrap();
    let url = vhost.url();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("service");
    let spool = dir.path().join("spool");
    run_ok({
        let mut c = tasklane(&url, &store);
        c.args(["provision", "ep-x"]);
        c
    });

    // Upper-case the payload; a payload containing "fail" exits 1.
    let script = "p=$(cat); echo \"$p\" | tr a-z A-Z; case \"$p\" in *fail*) exit 1;; esac";
    let mut endpoint = tasklane(&url, &store)
        .args(["endpoint", "ep-x", "--spool", spool.to_str().unwrap(), "--exec", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let file = dir.path().join("tasks.txt");
    std::fs::write(&file, "alpha\nbeta\nplease fail\ngamma\n").unwrap();
    let out = run_ok({
        let mut c = tasklane(&url, &store);
        c.args(["submit", "ep-x", "--file", file.to_str().unwrap()]);
        c
    });
    assert_eq!(out, "submitted 4 tasks to ep-x\n");

    let out = run_ok({
        let mut c = tasklane(&url, &store);
        c.args(["results", "--count", "4", "--timeout", "60", "--json"]);
        c
    });
    let got: BTreeMap<String, String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["payload"].as_str().unwrap().to_owned(), v["status"].as_str().unwrap().to_owned())
        })
        .collect();
    let want: BTreeMap<String, String> =
        [("ALPHA\n", "ok"), ("BETA\n", "ok"), ("GAMMA\n", "ok"), ("PLEASE FAIL\n", "failed")]
            .into_iter()
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            .collect();
    assert_eq!(got, want);

    assert_eq!(terminate(&mut endpoint, Duration::from_secs(20)), Some(0), "clean exit on SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(endpoint.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("status: consuming"), "status changes are reported: {stderr}");

    let inspect = run_ok({
        let mut c = tasklane(&url, &store);
        c.args(["spool", "inspect", spool.to_str().unwrap()]);
        c
    });
    assert!(inspect.contains("inbox: 0 tasks") && inspect.contains("outbox: 0 results"), "{inspect}");
    assert!(inspect.contains("completed (dedup window): 4 task ids"), "{inspect}");
}

/// SIGTERM ends the process within `--shutdown-grace` even when the broker
/// accepts the connection and never answers (SPEC §4, bounded shutdown).
#[test]
fn sigterm_ends_within_the_grace_when_the_broker_never_answers() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", hole.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = hole.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(conns);
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut endpoint = tasklane(&url, &dir.path().join("service"))
        .args(["endpoint", "ep-silent", "--spool", spool.to_str().unwrap(), "--shutdown-grace", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let code = terminate(&mut endpoint, Duration::from_secs(10));
    let took = started.elapsed();
    eprintln!("SIGTERM with a silent broker: exit {code:?} after {took:?} (grace 2 s)");
    assert_eq!(code, Some(0), "a clean exit, not a kill");
    assert!(took < Duration::from_millis(2_600), "took {took:?}");
    drop(held);
}

/// Most commands running at once in `log`, whose lines are `<task> s|e <ns>`.
fn most_at_once(log: &str) -> usize {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let delta = if f[1] == "s" { 1 } else { -1 };
            (f[2].parse().unwrap(), delta)
        })
        .collect();
    events.sort(); // at the same instant an end (-1) sorts before a start
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn workers_bound_the_commands_running_side_by_side() {
    let vhost = Vhost::create().unwrap();
    let url = vhost.url();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("service");
    // Each command logs its start and end and takes 0.5 s.
    let log = dir.path().join("runs.log");
    let script = format!(
        "p=$(cat); echo \"$p s $(date +%s%N)\" >> {log}; sleep 0.5; echo \"$p e $(date +%s%N)\" >> {log}; echo \"$p\"",
        log = log.display()
    );
    let config = dir.path().join("ep.toml");
    std::fs::write(&config, "workers = 3\n").unwrap();
    // One endpoint with the flag, one with the file's setting (not the
    // default: the number of cores, 2 here).
    for (ep, workers, how) in
        [("ep-one", 1, ["--workers", "1"]), ("ep-three", 3, ["--config", config.to_str().unwrap()])]
    {
        let _ = std::fs::remove_file(&log);
        run_ok({
            let mut c = tasklane(&url, &store);
            c.args(["provision", ep]);
            c
        });
        let spool = dir.path().join(ep);
        let mut endpoint = tasklane(&url, &store)
            .args(["endpoint", ep, "--spool", spool.to_str().unwrap(), "--exec", &script])
            .args(how)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let tasks = dir.path().join("tasks.txt");
        std::fs::write(&tasks, "t1\nt2\nt3\nt4\nt5\nt6\n").unwrap();
        run_ok({
            let mut c = tasklane(&url, &store);
            c.args(["submit", ep, "--file", tasks.to_str().unwrap()]);
            c
        });
        run_ok({
            let mut c = tasklane(&url, &store);
            c.args(["results", "--count", "6", "--timeout", "60"]);
            c
        });
        assert_eq!(terminate(&mut endpoint, Duration::from_secs(20)), Some(0));
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(log.lines().count(), 12, "every task ran once: {log}");
        assert_eq!(most_at_once(&log), workers, "{ep}: {log}");
    }
}
