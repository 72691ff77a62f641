//! The endpoint: drives a core `Lane` with amqprs and the LMDB spool.
