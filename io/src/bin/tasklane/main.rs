//! `tasklane`: provision endpoints, submit tasks, collect results, run an
//! endpoint, inspect a spool, watch the fleet, list tracked tasks, serve
//! the dashboard, and run the end-to-end demo.

mod cmd;
mod demo;
mod endpoint;
mod failure;
mod fleet;
mod handler;
mod logging;
mod status;
mod tasks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tasklane_core::EndpointId;
use tasklane_core::Failover;
use tasklane_io::service::{QueueType, Retention, TaskQueue};

use failure::Failure;

/// The broker `tasklane` talks to unless told otherwise.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime failure (broker unreachable, endpoint not provisioned, lost results, ...)
  2  usage error (bad arguments, bad AMQP URL, bad endpoint id, unreadable file)
  3  timeout (results: fewer than --count results before --timeout)
`tasklane status` exits 1 when the endpoint is not running.";

/// A crash-safe lane between a service and its compute endpoints over RabbitMQ.
#[derive(Parser, Debug)]
#[command(name = "tasklane", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// AMQP URL of the broker (the path is the vhost: %2f for "/"), or of
    /// each node of a cluster, separated by commas.
    #[arg(long = "amqp", value_name = "URL[,URL...]", env = "TASKLANE_AMQP_URL", default_value = DEFAULT_URL, global = true, hide_env_values = true)]
    pub amqp: String,
    /// The order in which a cluster's nodes are tried: in-order, or shuffle
    /// (a fresh random order every round) [default: shuffle].
    #[arg(long = "failover", value_name = "ORDER", env = "TASKLANE_FAILOVER", value_parser = parse_failover, global = true)]
    pub failover: Option<Failover>,
    /// For amqps:// URLs: PEM file of the CAs to trust instead of the public
    /// web roots (same as the URL's ?cacertfile=).
    #[arg(long = "tls-ca", value_name = "FILE", env = "TASKLANE_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Directory of the service's own LMDB store (task tracking, result dedup).
    #[arg(long = "store", value_name = "DIR", default_value = "./tasklane-service", global = true)]
    pub store: PathBuf,
    /// Task tracking keeps at most N tasks, forgetting the oldest finished
    /// ones first (enforced by every write to the store).
    #[arg(long = "retain-tasks", value_name = "N", env = "TASKLANE_RETAIN_TASKS", default_value_t = Retention::DEFAULT_MAX_TASKS, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub retain_tasks: u64,
    /// Task tracking forgets tasks submitted longer ago than DUR (e.g. 12h, 7d).
    #[arg(long = "retain-age", value_name = "DUR", env = "TASKLANE_RETAIN_AGE", default_value = "7days", value_parser = tasks::parse_duration, global = true)]
    pub retain_age: Duration,
    /// Log lines on stderr as text, or as one JSON object per line (for log
    /// shippers).
    #[arg(long = "log-format", value_name = "FORMAT", env = "TASKLANE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,
    /// Whether `--amqp` was given (flag or environment) rather than
    /// defaulted: only then does it override a `--config` file's URL.
    #[arg(skip)]
    pub amqp_given: bool,
}

impl Global {
    /// The retention bound of the service's store.
    pub fn retention(&self) -> Retention {
        Retention { max_age: Some(self.retain_age), max_tasks: Some(self.retain_tasks) }
    }
}

/// Whether `id` was set on the command line or from the environment, at
/// any level of subcommands (global arguments may come after them).
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
        || m.subcommand().is_some_and(|(_, sub)| given(sub, id))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Declare an endpoint's task queue and the shared results, status and
    /// dead-letter topology (idempotent).
    Provision {
        /// Endpoint id: 1-64 characters of A-Z a-z 0-9 _ -
        #[arg(value_parser = parse_endpoint)]
        endpoint: EndpointId,
        /// Kind of the task queue: quorum (replicated across a cluster's
        /// nodes) or classic.
        #[arg(long, value_name = "TYPE", default_value = "quorum", value_parser = parse_queue_type)]
        queue_type: QueueType,
        /// Quorum queues: a task delivered this many times without an ack
        /// goes to tasklane.dead (0: no limit).
        #[arg(long, value_name = "N", default_value_t = TaskQueue::DEFAULT_DELIVERY_LIMIT)]
        delivery_limit: u32,
        #[command(flatten)]
        user: cmd::UserArgs,
    },
    /// Submit tasks to an endpoint; prints how many were submitted.
    Submit(cmd::SubmitArgs),
    /// Run an endpoint until SIGINT/SIGTERM.
    Endpoint(cmd::EndpointArgs),
    /// Consume the service's results queue, de-duplicated, one line each.
    Results(cmd::ResultsArgs),
    /// Status, counters, connection and spool depths of an endpoint (exit 0
    /// while it runs, 1 when it does not).
    Status(status::StatusArgs),
    /// Every endpoint's last status report (drained from tasklane.status
    /// first), one line each; an endpoint silent for 3 of its report
    /// intervals is stale.
    Fleet(fleet::FleetArgs),
    /// The service's tracked tasks, oldest first, filtered; `tasks prune`
    /// applies the retention bound.
    Tasks(tasks::TasksArgs),
    /// Serve the operators' web page (fleet, spool depths, throughput, tasks
    /// by state, recent dead letters) until SIGINT/SIGTERM.
    Dashboard(fleet::DashboardArgs),
    /// Look into an endpoint's spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// End-to-end demo: provision a fresh endpoint, run it in-process,
    /// submit tasks, collect every result, print a summary.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum SpoolCommand {
    /// Counts and oldest entries of inbox and outbox.
    Inspect {
        /// The spool directory.
        dir: PathBuf,
        /// How many of the oldest entries of each to show.
        #[arg(long, default_value_t = 5)]
        oldest: usize,
    },
}

pub fn parse_endpoint(s: &str) -> Result<EndpointId, String> {
    EndpointId::new(s).map_err(|e| format!("bad endpoint id: {e}"))
}

fn parse_queue_type(s: &str) -> Result<QueueType, String> {
    s.parse()
}

pub fn parse_failover(s: &str) -> Result<Failover, String> {
    match s {
        "in-order" => Ok(Failover::InOrder),
        "shuffle" => Ok(Failover::Shuffle),
        _ => Err(format!("{s:?} is neither \"in-order\" nor \"shuffle\"")),
    }
}

fn main() -> ExitCode {
    logging::unset_empty_variables();
    let parsed = Cli::command().try_get_matches().and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            cli.global.amqp_given = given(&matches, "amqp");
            cli
        }
        Err(e) => return failure::clap_error(e),
    };
    // A running endpoint (and the dashboard) report what they do; the
    // other commands speak only of trouble. A non-empty RUST_LOG overrides.
    // The demo counts dead-lettered results instead of logging each one.
    let default_level = match cli.command {
        Command::Endpoint(_) | Command::Dashboard(_) => "warn,tasklane=info",
        Command::Demo(_) => "warn,tasklane_io::service::results=error",
        _ => "warn",
    };
    logging::init(default_level, &cli.global.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return Failure::Runtime(format!("cannot start the async runtime: {e}")).report(),
    };
    let outcome = runtime.block_on(run(cli));
    // Do not wait for amqprs' background tasks of connections already closed.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let g = cli.global;
    match cli.command {
        Command::Provision { endpoint, queue_type, delivery_limit, user } => {
            cmd::provision(&g, &endpoint, queue_type, delivery_limit, &user).await
        }
        Command::Submit(args) => cmd::submit(&g, args).await,
        Command::Endpoint(args) => endpoint::run(&g, args).await,
        Command::Results(args) => cmd::results(&g, args).await,
        Command::Status(args) => status::run(args),
        Command::Spool { command: SpoolCommand::Inspect { dir, oldest } } => cmd::spool_inspect(&dir, oldest),
        Command::Fleet(args) => fleet::fleet(&g, args).await,
        Command::Tasks(args) => tasks::run(&g, args),
        Command::Dashboard(args) => fleet::dashboard(&g, args).await,
        Command::Demo(args) => demo::run(&g, args).await,
    }
}
