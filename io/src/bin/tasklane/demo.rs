//! `tasklane demo`: the end-to-end demo.

use clap::Args;

use crate::failure::Failure;
use crate::Global;

/// `tasklane demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How many tasks to send through the lane.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub tasks: u64,
}

/// Runs the demo.
pub async fn run(_g: &Global, _args: DemoArgs) -> Result<(), Failure> {
    Err(Failure::Runtime("the demo is not available in this build yet".into()))
}
