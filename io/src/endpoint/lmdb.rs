//! The spool port over LMDB: the writer thread of [`crate::spool`] (one
//! write transaction per group, one fsync), its reports forwarded as core
//! inputs.

use std::time::Duration;

use bytes::Bytes;
use tasklane_core::{Input, OutboxSeq, SpoolWrite, Task};
use tokio::sync::mpsc::UnboundedReceiver;

use super::ports::{InputSink, SpoolPort};
use crate::spool::{SpoolReader, SpoolReport, SpoolWriter};

pub(crate) struct LmdbSpoolPort {
    writer: SpoolWriter,
    reader: SpoolReader,
    reports: Option<UnboundedReceiver<SpoolReport>>,
}

impl LmdbSpoolPort {
    pub(crate) fn new(writer: SpoolWriter, reader: SpoolReader, reports: UnboundedReceiver<SpoolReport>) -> Self {
        Self { writer, reader, reports: Some(reports) }
    }
}

/// A writer report as core's input, if core has one for it.
fn report_input(report: SpoolReport) -> Option<Input> {
    match report {
        SpoolReport::Committed { upto, .. } => Some(Input::SpoolCommitted { upto }),
        SpoolReport::Stalled { reason } => Some(Input::SpoolStalled { reason }),
        SpoolReport::Refused { seq, error } => Some(Input::SpoolRefused { seq, reason: error.to_string() }),
        SpoolReport::Space { free_bytes, reusable_bytes, .. } => {
            Some(Input::SpoolSpace { available_bytes: free_bytes.saturating_add(reusable_bytes) })
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

impl SpoolPort for LmdbSpoolPort {
    fn start(&mut self, inputs: InputSink) {
        let Some(mut reports) = self.reports.take() else { return };
        tokio::spawn(async move {
            while let Some(report) = reports.recv().await {
                if let Some(input) = report_input(report) {
                    if !inputs.send(input) {
                        return;
                    }
                }
            }
        });
    }

    fn write(&mut self, write: SpoolWrite) {
        if let Err(e) = self.writer.write(write) {
            // The writer thread is gone; nothing more is committed, so
            // nothing more is acked. Say it once per write: it is a bug.
            tracing::error!("{e}");
        }
    }

    fn task(&mut self, arrival: u64) -> Result<Option<Task>, String> {
        self.reader.task(arrival).map_err(|e| e.to_string())
    }

    fn result_bodies(&mut self, seqs: &[OutboxSeq]) -> Result<Vec<Option<Bytes>>, String> {
        self.reader.result_bodies(seqs).map_err(|e| e.to_string())
    }

    async fn close(self, grace: Duration) {
        let Self { writer, reader, .. } = self;
        drop(reader); // the environment closes when the writer is done with it
        let close = tokio::task::spawn_blocking(move || writer.close_within(grace));
        match tokio::time::timeout(grace, close).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!("{e}"),
            Ok(Err(e)) => tracing::error!("spool close: {e}"),
            // The thread goes on flushing on its own; what it has not
            // committed was never acked, so the broker still has it.
            Err(_) => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "spool still flushing at the end of the grace")
            }
        }
    }
}
