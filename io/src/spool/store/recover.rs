//! Getting the LMDB environment back after a failure: LMDB marks an
//! environment unusable (`MDB_PANIC`) when a commit fails to write its
//! meta page; every later transaction fails until it is closed and opened
//! again.

use std::path::Path;
use std::sync::PoisonError;

use heed::types::Bytes;
use heed::{CommitOrAbort, Env, EnvOpenOptions, MdbError};

use super::{Db, LmdbSpool, FORMAT, FORMAT_KEY};

impl LmdbSpool {
    /// The environment, opened again first if a failure closed it.
    pub(super) fn env(&mut self) -> Result<Env, heed::Error> {
        if self.env.is_none() {
            self.reopen()?;
        }
        Ok(self.env.clone().expect("open"))
    }

    /// Whether LMDB refuses to go on with this environment after `e`.
    pub(super) fn needs_reopen(&self, e: &heed::Error) -> bool {
        let panicked = |e: &heed::Error| matches!(e, heed::Error::Mdb(MdbError::Panic));
        match &self.env {
            None => true,
            Some(_) if panicked(e) => true,
            // The failed commit may have marked the environment unusable:
            // the next transaction would say so.
            Some(env) => env.write_txn().err().is_some_and(|e| panicked(&e)),
        }
    }

    /// Closes the environment and opens it again, with the map size it had.
    /// The mirror stays: it is what the last commit left on disk.
    pub(super) fn reopen(&mut self) -> Result<(), heed::Error> {
        // Readers wait until the environment is back (they hold this lock
        // for their transactions, and their handle must go for the close).
        let shared = self.shared.clone();
        let mut slot = shared.write().unwrap_or_else(PoisonError::into_inner);
        *slot = None;
        if let Some(env) = self.env.take() {
            env.prepare_for_closing().wait();
        }
        let (env, dbs) = open_env(&self.dir, self.map_size)?;
        let CommitOrAbort::Commit([inbox, outbox, completed, meta, quarantine]) = dbs else {
            return Err(heed::Error::Io(std::io::Error::other("the spool's format changed under it")));
        };
        (self.inbox, self.outbox, self.completed, self.meta, self.quarantine) =
            (inbox, outbox, completed, meta, quarantine);
        self.map_size = env.info().map_size;
        *slot = Some(super::reader::Open::new(env.clone(), inbox, outbox));
        self.env = Some(env);
        #[cfg(test)]
        {
            self.reopens += 1;
        }
        Ok(())
    }

    /// Makes the next batch fail with `e` after its `n`th write is done (0:
    /// before any), as a failed disk would; for tests of recovery.
    #[cfg(test)]
    pub(crate) fn fail_next_batch(&mut self, n: usize, e: heed::Error) {
        self.fail_after = Some((n, e));
    }

    /// How often the environment was opened again.
    #[cfg(test)]
    pub(crate) fn reopens(&self) -> usize {
        self.reopens
    }

    /// Whether the mirror is what the disk holds.
    #[cfg(test)]
    pub(crate) fn mirror_matches_disk(&mut self) -> bool {
        let mirror = self.mirror.clone();
        self.load().expect("readable");
        let same = mirror == self.mirror;
        self.mirror = mirror;
        same
    }
}

pub(super) type Dbs = CommitOrAbort<[Db; 5], Vec<u8>>;

/// Opens the environment of `dir` and its databases (inbox, outbox,
/// completed, meta, quarantine), creating what is missing; `Abort` with
/// the format marker found when it is not this tasklane's.
pub(super) fn open_env(dir: &Path, map_size: usize) -> Result<(Env, Dbs), heed::Error> {
    // SAFETY: the spool directory belongs to this spool; tasklane never
    // modifies the files other than through LMDB.
    let env = unsafe { EnvOpenOptions::new().map_size(map_size).max_dbs(8).open(dir) }?;
    let wtxn = env.write_txn()?;
    let dbs = env.create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
        let inbox = dbo.create_database::<Bytes, Bytes>(wtxn, Some("inbox"))?;
        let outbox = dbo.create_database::<Bytes, Bytes>(wtxn, Some("outbox"))?;
        let completed = dbo.create_database::<Bytes, Bytes>(wtxn, Some("completed"))?;
        let meta = dbo.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?;
        let quarantine = dbo.create_database::<Bytes, Bytes>(wtxn, Some("quarantine"))?;
        match meta.get(wtxn, FORMAT_KEY)? {
            None => meta.put(wtxn, FORMAT_KEY, &FORMAT.to_be_bytes())?,
            Some(v) if v == FORMAT.to_be_bytes() => {}
            Some(v) => return Ok(CommitOrAbort::Abort(v.to_vec())),
        }
        Ok(CommitOrAbort::Commit((inbox, outbox, completed, meta, quarantine)))
    })?;
    let dbs = match dbs {
        CommitOrAbort::Commit((inbox, outbox, completed, meta, quarantine)) => {
            CommitOrAbort::Commit([inbox, outbox, completed, meta, quarantine])
        }
        CommitOrAbort::Abort(found) => CommitOrAbort::Abort(found),
    };
    Ok((env, dbs))
}
