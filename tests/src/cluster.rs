//! The 3-node RabbitMQ cluster of `scripts/ensure-cluster.sh`: nodes
//! `rabbit1@localhost` .. `rabbit3@localhost`, AMQP on 127.0.0.1:5673-5675,
//! management on :15673-15675, guest/guest.
//!
//! A test that uses the cluster holds a [`ClusterGuard`] for its whole
//! run: an exclusive lock on a file beside the nodes' state, taken across
//! processes, so that tests that kill nodes never run side by side (not in
//! one test binary, nor in two suites on one machine). Taking the guard
//! starts whatever node is down and waits until all three run clustered;
//! dropping it does the same, so the next test finds three nodes even when
//! this one failed halfway.
//!
//! ```no_run
//! # fn example() -> Result<(), tasklane_tests::HarnessError> {
//! use tasklane_tests::cluster::ClusterGuard;
//! let cluster = ClusterGuard::acquire()?;
//! let vhost = cluster.vhost()?; // on the cluster, through node 1
//! let urls = cluster.urls(&vhost, &[2, 3, 1]); // node 2 first
//! cluster.kill(2)?; // SIGKILL
//! cluster.start(2)?; // back, clustered again
//! # Ok(()) }
//! ```

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use crate::vhost::{sweep_stale, Broker};
use crate::{amqp_url, HarnessError, Vhost};

/// How many nodes the cluster has.
pub const NODES: usize = 3;

const MANAGEMENT: &[&str] = &["http://127.0.0.1:15673", "http://127.0.0.1:15674", "http://127.0.0.1:15675"];

/// Node `n`'s (1-based) AMQP address.
pub fn node_addr(n: usize) -> SocketAddr {
    assert!((1..=NODES).contains(&n), "nodes are 1 to {NODES}");
    SocketAddr::from(([127, 0, 0, 1], 5672 + n as u16))
}

/// Node `n`'s Erlang node name, e.g. `rabbit2@localhost`.
pub fn node_name(n: usize) -> String {
    format!("rabbit{n}@localhost")
}

/// The node (1-based) of a node name or an AMQP address.
pub fn node_of_name(name: &str) -> Option<usize> {
    (1..=NODES).find(|&n| node_name(n) == name)
}

/// The node (1-based) listening on AMQP address `addr`.
pub fn node_of_addr(addr: SocketAddr) -> Option<usize> {
    (1..=NODES).find(|&n| node_addr(n) == addr)
}

/// The cluster as the vhost harness sees it: AMQP through node 1,
/// management through whichever node answers first.
pub fn broker() -> Broker {
    Broker { amqp: node_addr(1), management: MANAGEMENT }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-cluster.sh")
}

fn lock_path() -> PathBuf {
    let base = std::env::var_os("TASKLANE_CLUSTER_DIR").unwrap_or_else(|| "/var/tmp/tasklane-cluster".into());
    PathBuf::from(base).join("tests.lock")
}

/// Runs `scripts/ensure-cluster.sh ARGS`; its one-line complaint on failure.
fn run_script(args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("bash").arg(script()).args(args).output().map_err(|e| HarnessError::Unexpected {
        path: "scripts/ensure-cluster.sh".into(),
        detail: format!("cannot run: {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(HarnessError::Unexpected {
        path: format!("scripts/ensure-cluster.sh {}", args.join(" ")),
        detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The right to use (and kill nodes of) the cluster, held for a test's run.
#[derive(Debug)]
pub struct ClusterGuard {
    _lock: File,
}

impl ClusterGuard {
    /// Waits for the cluster lock, then makes sure all three nodes run
    /// clustered (starting the cluster if needed: about 45 s from scratch).
    pub fn acquire() -> Result<Self, HarnessError> {
        let path = lock_path();
        let io =
            |e: std::io::Error| HarnessError::Unexpected { path: path.display().to_string(), detail: e.to_string() };
        std::fs::create_dir_all(path.parent().expect("a directory")).map_err(io)?;
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io)?;
        file.lock().map_err(io)?;
        run_script(&[])?;
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| sweep_stale(broker()));
        Ok(Self { _lock: file })
    }

    /// A fresh vhost on the cluster (every node serves it), deleted on drop.
    pub fn vhost(&self) -> Result<Vhost, HarnessError> {
        Vhost::create_on(broker())
    }

    /// The URL of node `n` for `vhost`, guest/guest.
    pub fn url(&self, vhost: &Vhost, n: usize) -> String {
        amqp_url(node_addr(n), vhost.name())
    }

    /// The URLs of `nodes` for `vhost`, in that order, separated by commas.
    pub fn urls(&self, vhost: &Vhost, nodes: &[usize]) -> String {
        nodes.iter().map(|&n| self.url(vhost, n)).collect::<Vec<_>>().join(",")
    }

    /// Kills node `n` with SIGKILL, as a crash would.
    pub fn kill(&self, n: usize) -> Result<(), HarnessError> {
        run_script(&["kill", &n.to_string()])
    }

    /// Stops node `n` cleanly (`rabbitmqctl stop`): clients get a
    /// connection.close, its queue replicas hand over.
    pub fn stop(&self, n: usize) -> Result<(), HarnessError> {
        run_script(&["stop", &n.to_string()])
    }

    /// Starts node `n` (and any other that is down) and waits until all
    /// three run clustered.
    pub fn start(&self, n: usize) -> Result<(), HarnessError> {
        run_script(&["start", &n.to_string()])
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Err(e) = run_script(&[]) {
            eprintln!("tasklane-tests: the cluster did not come back: {e}");
        }
    }
}
