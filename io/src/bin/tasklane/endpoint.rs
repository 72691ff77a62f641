//! `tasklane endpoint`: runs an `Endpoint` with a [`Handler`] until
//! SIGINT/SIGTERM; also the in-process endpoint of `tasklane demo`.

use std::path::Path;

use tasklane_core::EndpointId;

use crate::cmd::EndpointArgs;
use crate::failure::Failure;
use crate::handler::Handler;
use crate::Global;

/// An endpoint running in this process.
pub struct RunningEndpoint {}

impl RunningEndpoint {
    /// Stops the endpoint cleanly: what is spooled stays spooled.
    pub async fn stop(self) -> Result<(), Failure> {
        Ok(())
    }
}

/// Starts an endpoint for `endpoint` on the spool in `spool`.
pub async fn start(
    _g: &Global,
    _endpoint: &EndpointId,
    _spool: &Path,
    _handler: Handler,
) -> Result<RunningEndpoint, Failure> {
    Err(Failure::Runtime("the endpoint is not available in this build yet".into()))
}

/// `tasklane endpoint E --spool DIR [--exec CMD]`.
pub async fn run(g: &Global, args: EndpointArgs) -> Result<(), Failure> {
    let handler = args.exec.map_or(Handler::Echo, Handler::Exec);
    let running = start(g, &args.endpoint, &args.spool, handler).await?;
    crate::cmd::wait_for_signal().await;
    running.stop().await
}
