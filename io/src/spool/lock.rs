//! One process per spool: an advisory lock (`flock`, exclusive) on
//! `tasklane.lock` in the spool directory, holding the pid of its owner.
//!
//! `flock` belongs to the open file, so the kernel drops it when the
//! process ends however it ends (SIGKILL included): a lock never outlives
//! its process, and nothing stale blocks a restart. Read-only tools
//! ([`super::inspect`]) do not take it and work beside a running endpoint.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use super::SpoolError;

/// The lock file's name in the spool directory.
pub const LOCK_FILE: &str = "tasklane.lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct SpoolLock {
    file: File,
}

impl SpoolLock {
    /// Takes the lock of spool `dir` (which must exist), or fails at once
    /// with [`SpoolError::Locked`] naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self, SpoolError> {
        let io = |e: std::io::Error| SpoolError::Io { dir: dir.to_path_buf(), source: e };
        let path = dir.join(LOCK_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(SpoolError::Locked { dir: dir.to_path_buf(), pid: holder(&mut file) })
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io)?;
        Ok(Self { file })
    }
}

impl Drop for SpoolLock {
    fn drop(&mut self) {
        // Still holding it: the next owner never reads our pid as its own.
        let _ = self.file.set_len(0);
    }
}

/// The pid in the lock file. Its owner writes it right after taking the
/// lock: an empty file is read again for a little while.
fn holder(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The message of [`SpoolError::Locked`].
pub(super) fn locked_message(dir: &Path, pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("spool {} is in use by process {pid} ({LOCK_FILE})", dir.display()),
        None => format!("spool {} is in use by another process ({LOCK_FILE})", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_at_once_naming_the_holder_and_a_dropped_one_frees_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let lock = SpoolLock::acquire(dir.path()).unwrap();
        let started = std::time::Instant::now();
        // flock conflicts between two opens of the file, even in one process.
        let err = SpoolLock::acquire(dir.path()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        let me = std::process::id();
        assert!(matches!(&err, SpoolError::Locked { pid: Some(pid), .. } if *pid == me), "{err}");
        assert_eq!(
            err.to_string(),
            format!("spool {} is in use by process {me} (tasklane.lock)", dir.path().display())
        );
        drop(lock);
        let again = SpoolLock::acquire(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(), format!("{me}\n"));
        drop(again);
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(), "");
    }
}
