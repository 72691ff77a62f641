//! `tasklane demo` in a vhost of its own: every result comes back and the
//! summary line says so.

use std::process::Command;

use tasklane_tests::Vhost;

#[test]
fn demo_loses_nothing_and_prints_a_summary() {
    let vhost = Vhost::create().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["--amqp", &vhost.url(), "demo", "--tasks", "500", "--size", "32"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.starts_with("sent 500, received 500, lost 0,"), "{summary}");
    for part in ["tasks/s", "p50", "p99"] {
        assert!(summary.contains(part), "{summary}");
    }
    // The demo provisioned the vhost's shared topology like any service.
    assert_eq!(vhost.queue("tasklane.dead").unwrap().map(|q| q.durable), Some(true), "the shared topology stays");
}
