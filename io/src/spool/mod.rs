//! The LMDB spool: group commit on one writer thread.
