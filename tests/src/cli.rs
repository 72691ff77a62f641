//! Runs the `tasklane` binary the way a user does: every command with the
//! test's own AMQP URL (a vhost of its own, maybe through a `FaultProxy`)
//! and the service's own store directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `tasklane` binary of this build profile: the one `cargo test` built
/// for this test when it says so (`CARGO_BIN_EXE_tasklane`, set at run time
/// by cargo 1.94 and later for the tests of `tasklane-io`), otherwise built
/// once per test process.
///
/// A binary in the profile directory newer than its sources is taken next
/// (see [`is_fresh`]). The nested `cargo build` is the fallback only: its
/// features differ from those of `cargo test` (no dev-dependencies), so it
/// rebuilds the binary,
/// which costs minutes on a small machine, and waits for any other cargo
/// holding the build directory.
pub fn tasklane_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_tasklane").map(PathBuf::from).filter(|b| b.exists()) {
            return bin;
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps layout");
        let built = profile_dir.join("tasklane");
        if is_fresh(&built) {
            return built;
        }
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "-q", "-p", "tasklane-io", "--bin", "tasklane"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the tasklane binary");
        assert!(status.success(), "cargo build of the tasklane binary failed");
        let bin = profile_dir.join("tasklane");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
}

/// Whether `bin` exists and is newer than every source it is built from.
/// `cargo test --workspace` builds the binary for `tasklane-io`'s own tests
/// into the profile directory, so a workspace run finds it fresh; after an
/// edit of `core/` or `io/` the nested build takes over.
fn is_fresh(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let sources = ["Cargo.lock", "Cargo.toml", "core/Cargo.toml", "core/src", "io/Cargo.toml", "io/src"];
    sources.iter().all(|s| newest(&root.join(s)).is_some_and(|t| t <= built))
}

/// The newest modification time of a file, or of any file under a directory.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let mut latest = meta.modified().ok()?;
    for entry in std::fs::read_dir(path).ok()? {
        latest = latest.max(newest(&entry.ok()?.path())?);
    }
    Some(latest)
}

/// A `tasklane` command line bound to one broker URL and one service store.
pub struct Tasklane {
    url: String,
    store: PathBuf,
}

/// One line of `tasklane results --json`.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
pub struct ResultLine {
    pub task_id: String,
    pub endpoint: String,
    pub status: String,
    pub payload: String,
}

impl Tasklane {
    /// Commands against `url`, keeping the service's store in `store`.
    pub fn new(url: impl Into<String>, store: impl Into<PathBuf>) -> Self {
        Self { url: url.into(), store: store.into() }
    }

    /// The same service store, another URL (e.g. through a proxy).
    pub fn with_url(&self, url: impl Into<String>) -> Self {
        Self { url: url.into(), store: self.store.clone() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `tasklane --amqp URL --store DIR <args>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tasklane_bin());
        c.arg("--amqp").arg(&self.url).arg("--store").arg(&self.store).args(args);
        c.env_remove("TASKLANE_AMQP_URL").stdin(Stdio::null());
        c
    }

    /// Runs to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tasklane")
    }

    /// Runs to completion and insists on exit 0.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tasklane {args:?} failed with {}:\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Starts `tasklane endpoint E --spool DIR <extra>`; killed on drop.
    pub fn endpoint(&self, endpoint: &str, spool: &Path, extra: &[&str]) -> Running {
        let mut args = vec!["endpoint", endpoint, "--spool", spool.to_str().expect("UTF-8 path")];
        args.extend_from_slice(extra);
        let child =
            self.command(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn tasklane endpoint");
        Running::new(child)
    }

    /// `tasklane results --count N --timeout SECS --json`, parsed. Returns
    /// the lines and whether the command reached N.
    pub fn results(&self, count: usize, timeout: Duration) -> (Vec<ResultLine>, bool) {
        let n = count.to_string();
        let t = timeout.as_secs().max(1).to_string();
        let out = self.run(&["results", "--count", &n, "--timeout", &t, "--json"]);
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad results line {l:?}: {e}")))
            .collect();
        (lines, out.status.success())
    }
}

/// A running child process, with its stderr collected in the background.
pub struct Running {
    child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn new(mut child: Child) -> Self {
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Self { child, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns the
    /// exit code (None if it had to be killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
