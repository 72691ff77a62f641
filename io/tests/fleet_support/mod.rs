//! Real fleets for the fleet tests, in a vhost of the test's own:
//!
//! - [`OperatorFleet`]: `tasklane endpoint` processes (provisioned with
//!   `tasklane provision`, reporting every second) in the states an
//!   operator relies on: `ep-busy` consuming with [`HELD`] tasks held by
//!   its `--exec` command (non-zero spool depth), `ep-dup` running twice
//!   on a classic task queue (the first process consumes, the second waits
//!   as standby, SPEC §4 "Failover"), and `ep-gone`, which the test kills
//!   with SIGKILL;
//! - [`RealEndpoint`]: a library endpoint on a runtime of its own;
//! - [`publish_raw`]: a message no real endpoint would send (a spoofed
//!   routing key, garbage), published as guest.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::fleet;
use tasklane_io::metrics;
use tasklane_tests::{Running, Tasklane};

/// Tasks `ep-busy` holds until [`OperatorFleet::release`].
pub const HELD: u64 = 5;

/// Seconds between two reports of every endpoint of the fleet.
pub const INTERVAL_SECS: u64 = 1;

/// Real `tasklane endpoint` processes in four real states.
pub struct OperatorFleet {
    /// `ep-busy`: consuming, [`HELD`] tasks in its inbox.
    pub busy: Running,
    /// `ep-dup`'s first process: consuming.
    pub active: Running,
    /// `ep-dup`'s second process: standby.
    pub standby: Running,
    /// `ep-gone`: consuming until the test kills it.
    pub gone: Running,
    gate: PathBuf,
}

/// Waits until the status file in `spool` says `status` and `inbox` held
/// tasks, for at most 30 s.
fn wait_status(spool: &Path, status: &str, inbox: u64, running: &Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = metrics::read_status(spool).ok().flatten();
        if now.as_ref().is_some_and(|r| r.status == status && r.spool_inbox as u64 == inbox) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {status} with inbox {inbox} (last: {now:?}); stderr:\n{}",
            spool.display(),
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl OperatorFleet {
    /// Provisions `ep-busy`, `ep-dup` and `ep-gone`, submits [`HELD`]
    /// tasks to `ep-busy`, starts the four processes (spools under `dir`)
    /// and returns once each says, in its status file, what it should.
    pub fn start(cli: &Tasklane, dir: &Path) -> Self {
        // ep-dup's task queue is classic: on a quorum queue RabbitMQ counts
        // only the active consumer in a declare-ok, so a standby cannot tell
        // it stands by and reports `consuming` (see io/tests/cluster.rs).
        cli.run_ok(&["provision", "ep-busy"]);
        cli.run_ok(&["provision", "ep-dup", "--queue-type", "classic"]);
        cli.run_ok(&["provision", "ep-gone"]);
        let interval = INTERVAL_SECS.to_string();
        let common = ["--report-interval", interval.as_str(), "--shutdown-grace", "2"];
        let gate = dir.join("gate");
        // Held until the gate opens, at most 30 s (no orphan outlives that).
        let hold = format!("for i in $(seq 300); do [ -e '{}' ] && break; sleep 0.1; done; cat", gate.display());
        cli.run_ok(&["submit", "ep-busy", "--count", &HELD.to_string(), "--size", "16"]);
        let spool = |name: &str| dir.join(name);
        let busy =
            cli.endpoint("ep-busy", &spool("busy"), &[&common[..], &["--exec", &hold, "--workers", "2"]].concat());
        let active = cli.endpoint("ep-dup", &spool("dup-1"), &common);
        wait_status(&spool("dup-1"), "consuming", 0, &active);
        let standby = cli.endpoint("ep-dup", &spool("dup-2"), &common);
        let gone = cli.endpoint("ep-gone", &spool("gone"), &common);
        wait_status(&spool("busy"), "consuming", HELD, &busy);
        wait_status(&spool("dup-2"), "standby", 0, &standby);
        wait_status(&spool("gone"), "consuming", 0, &gone);
        wait_status(&spool("dup-1"), "consuming", 0, &active);
        Self { busy, active, standby, gone, gate }
    }

    /// Lets `ep-busy`'s held tasks complete.
    pub fn release(&self) {
        std::fs::write(&self.gate, b"").unwrap();
    }

    /// Closes the gate again: tasks `ep-busy` starts from now on are held.
    pub fn hold(&self) {
        let _ = std::fs::remove_file(&self.gate);
    }

    /// SIGKILL for `ep-gone`: no last word. Returns when it died.
    pub fn kill_gone(&mut self) -> Instant {
        self.gone.kill();
        Instant::now()
    }

    /// Opens the gate and stops every process with SIGTERM.
    pub fn stop(mut self) {
        self.release();
        for p in [&mut self.busy, &mut self.standby, &mut self.active, &mut self.gone] {
            if p.alive() {
                p.terminate(Duration::from_secs(10));
            }
        }
    }
}

/// A real endpoint (amqprs, LMDB) of the library on a runtime of its own,
/// reporting every [`INTERVAL_SECS`]; [`RealEndpoint::kill`] drops the
/// runtime, so it stops without a last word, as SIGKILL would.
pub struct RealEndpoint {
    rt: Option<tokio::runtime::Runtime>,
    _endpoint: tasklane_io::endpoint::Endpoint,
}

impl RealEndpoint {
    pub fn start(url: &str, id: &str, spool: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let cfg = tasklane_io::endpoint::EndpointConfig::new(url, id, spool)
            .unwrap()
            .heartbeat(5)
            .report_interval(Duration::from_secs(INTERVAL_SECS));
        let endpoint = rt.block_on(tasklane_io::endpoint::Endpoint::open(cfg)).unwrap();
        Self { rt: Some(rt), _endpoint: endpoint }
    }

    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for RealEndpoint {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes one message to exchange `results` with `routing_key`: a
/// spoofed or broken report.
pub async fn publish_raw(url: &str, routing_key: &str, raw: &tasklane_core::RawMessage) {
    let conn = amqp::connect(&ConnectOptions::parse(url).unwrap()).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    let props = fleet::publish_properties(raw).unwrap();
    channel.basic_publish(props, raw.body.to_vec(), amqp::publish_args("results", routing_key)).await.unwrap();
    let _ = channel.close().await;
    let _ = conn.close().await;
}
