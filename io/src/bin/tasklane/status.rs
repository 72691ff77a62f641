//! `tasklane status E --spool DIR` (or `--config FILE`, the endpoint's own
//! settings file): what endpoint E is doing, read from the
//! status file the running endpoint keeps in its spool directory
//! (`tasklane_io::metrics::StatusFile`). Exit 0 while it runs, 1 when it
//! does not (then the spool's depths are read from the spool itself).

use std::path::{Path, PathBuf};

use clap::Args;
use tasklane_core::EndpointId;
use tasklane_io::metrics::{self, StatusReport};
use tasklane_io::settings::EndpointSettings;
use tasklane_io::spool::{self, SpoolError};

use crate::cmd::EndpointSource;
use crate::failure::Failure;

/// `tasklane status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub source: EndpointSource,
    /// One JSON object: the endpoint's last report and whether it runs.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct JsonStatus<'a> {
    running: bool,
    #[serde(flatten)]
    report: Option<&'a StatusReport>,
    spool_inbox: usize,
    spool_outbox: usize,
}

fn seconds(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{:.1} s", d.as_secs_f64()),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// Inbox and outbox lengths from the spool itself (no endpoint writes it).
fn spool_depths(dir: &Path) -> Result<(usize, usize), Failure> {
    let (snapshot, _, _) = spool::inspect(dir).map_err(|e| match e {
        SpoolError::Missing(_) => Failure::Usage(format!("{e} (is --spool the endpoint's spool directory?)")),
        e => Failure::Runtime(e.to_string()),
    })?;
    Ok((snapshot.inbox.len(), snapshot.outbox.len()))
}

/// Endpoint id and spool directory from the flags, else the variables, else
/// the file.
fn which(args: &StatusArgs) -> Result<(EndpointId, PathBuf), Failure> {
    let (settings, mut problems) = EndpointSettings::load(args.source.config.as_deref(), std::env::vars());
    let endpoint = match (&args.source.endpoint, settings.endpoint.as_deref()) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(id)) => crate::parse_endpoint(id).map_err(|e| problems.push(format!("endpoint: {e}"))).ok(),
        (None, None) => {
            problems.push("the endpoint id is missing (argument, --config or TASKLANE_ENDPOINT)".into());
            None
        }
    };
    let spool = args.source.spool.clone().or(settings.spool_dir);
    if spool.is_none() {
        problems.push("the spool directory is missing (--spool, --config or TASKLANE_SPOOL_DIR)".into());
    }
    match (endpoint, spool) {
        (Some(endpoint), Some(spool)) if problems.is_empty() => Ok((endpoint, spool)),
        _ => Err(Failure::Problems(problems)),
    }
}

pub fn run(args: StatusArgs) -> Result<(), Failure> {
    let (endpoint, dir) = which(&args)?;
    let dir = &dir;
    if !dir.is_dir() {
        return Err(Failure::Usage(format!("{} is not a directory", dir.display())));
    }
    let report = metrics::read_status(dir)
        .map_err(|e| Failure::Runtime(format!("cannot read {}: {e}", metrics::status_path(dir).display())))?;
    if let Some(r) = &report {
        if r.endpoint != endpoint.as_str() {
            return Err(Failure::Usage(format!(
                "{} is the spool of endpoint {}, not {}",
                dir.display(),
                r.endpoint,
                endpoint
            )));
        }
    }
    let running = report.as_ref().is_some_and(metrics::is_live);
    // A running endpoint holds the spool: trust its report. Otherwise the
    // spool itself is the truth.
    let (inbox, outbox) = match (&report, running) {
        (Some(r), true) => (r.spool_inbox, r.spool_outbox),
        _ => spool_depths(dir)?,
    };
    if args.json {
        let out = JsonStatus { running, report: report.as_ref(), spool_inbox: inbox, spool_outbox: outbox };
        println!("{}", serde_json::to_string(&out).expect("a report serializes"));
    } else {
        print_text(&endpoint, report.as_ref(), running, inbox, outbox);
    }
    if running {
        Ok(())
    } else {
        Err(Failure::Quiet(1))
    }
}

fn print_text(endpoint: &EndpointId, report: Option<&StatusReport>, running: bool, inbox: usize, outbox: usize) {
    match (report, running) {
        (Some(r), true) => {
            println!("endpoint {endpoint}: {} (pid {}, reported {} ago)", r.status_line(), r.pid, seconds(r.age()))
        }
        (Some(r), false) => {
            println!(
                "endpoint {endpoint}: not running (last report {} ago said: {})",
                seconds(r.age()),
                r.status_line()
            )
        }
        (None, _) => println!("endpoint {endpoint}: not running (no status file in this spool)"),
    }
    match report.and_then(|r| r.connection.as_ref().filter(|_| running)) {
        Some(c) => println!(
            "connection: {:?} to {} ({}, {}, vhost {}, user {}, heartbeat {} s)",
            c.name,
            c.peer,
            if c.tls { "amqps" } else { "amqp" },
            c.broker,
            c.vhost,
            c.user,
            c.heartbeat
        ),
        None => println!("connection: none"),
    }
    println!("spool: inbox {inbox} tasks, outbox {outbox} results");
    if let Some(r) = report {
        let counters: Vec<String> = metrics::counter_fields(&Default::default())
            .iter()
            .map(|(name, _, _)| format!("{name} {}", r.counter(name)))
            .collect();
        println!("counters: {}", counters.join(", "));
    }
}
