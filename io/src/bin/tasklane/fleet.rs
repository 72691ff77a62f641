//! `tasklane fleet` (the last report of every endpoint, drained from
//! `tasklane.status` first), `tasklane fleet forget E` (a retired endpoint
//! leaves the fleet instead of staying stale for ever) and `tasklane
//! dashboard` (the same on a web page that reloads itself).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Subcommand};
use tasklane_io::fleet::dashboard::{Dashboard, DashboardOptions};
use tasklane_io::fleet::{member_json, members, Fleet, FleetMember, Shown};
use tasklane_io::service::{ServiceError, TaskStore};

use crate::cmd::{brokers, connect, open_store, service_failure, stop_flag};
use crate::failure::{print_lines, Failure};
use crate::Global;

/// `tasklane fleet`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: Option<FleetCommand>,
    /// One JSON object per endpoint: endpoint, state, stale, last_seen_ms,
    /// seen_ago_ms and the whole last report.
    #[arg(long)]
    json: bool,
    /// Keep draining and print the fleet again every SECS seconds, until
    /// SIGINT/SIGTERM.
    #[arg(long)]
    watch: bool,
    /// With --watch: seconds between two prints.
    #[arg(long, value_name = "SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600), requires = "watch")]
    every: u64,
}

#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Remove every record of endpoint E from the service's store (it was
    /// retired; a stale endpoint otherwise stays listed). Needs no broker;
    /// a later report of E lists it again.
    Forget {
        #[arg(value_name = "E", value_parser = crate::parse_endpoint)]
        endpoint: tasklane_core::EndpointId,
    },
}

/// `tasklane dashboard`.
#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Address to serve the page on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Seconds between the page's reloads.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    refresh: u32,
    /// How far back the throughput chart goes, e.g. 10m.
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = crate::tasks::parse_duration)]
    window: Duration,
}

fn ago(ms: u64) -> String {
    match ms {
        0..=119_999 => format!("{:.1} s ago", ms as f64 / 1000.0),
        120_000..=7_199_999 => format!("{} min ago", ms / 60_000),
        _ => format!("{} h ago", ms / 3_600_000),
    }
}

/// The fleet as lines: a header, then one line per endpoint process (an
/// endpoint id running twice, active and standby, has two; `pid` tells
/// them apart).
fn table(members: &[FleetMember]) -> Vec<String> {
    if members.is_empty() {
        return vec!["no endpoint has reported yet".into()];
    }
    let mut rows =
        vec![["endpoint", "state", "node", "pid", "inbox", "outbox", "completed", "last seen"].map(String::from)];
    for m in members {
        let r = m.report();
        let mut seen = ago(m.seen_ago_ms());
        if let Shown::Stale(said) = m.state() {
            seen.push_str(&format!(" (last said {said})"));
        } else if let Some(reason) = &r.reason {
            seen.push_str(&format!(" ({reason})"));
        }
        rows.push([
            m.endpoint().to_string(),
            m.state().to_string(),
            r.node.clone().unwrap_or_else(|| "-".into()),
            r.pid.to_string(),
            r.spool.inbox.to_string(),
            r.spool.outbox.to_string(),
            r.counter("completed").to_string(),
            seen,
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

fn print(members: &[FleetMember], json: bool) -> Result<(), Failure> {
    if json {
        print_lines(members.iter().map(|m| member_json(m).to_string()))
    } else {
        print_lines(table(members))
    }
}

fn read(store: &TaskStore) -> Result<Vec<FleetMember>, Failure> {
    members(store).map_err(|e| Failure::runtime("cannot read the fleet from the store", e))
}

/// `tasklane fleet forget E`: exit 1 when the store has no record of E.
fn forget(g: &Global, endpoint: &tasklane_core::EndpointId) -> Result<(), Failure> {
    let store = open_store(g)?;
    let gone = store
        .forget_endpoint(endpoint.as_str())
        .map_err(|e| Failure::runtime(format!("task store {}", g.store.display()), e))?;
    match gone {
        0 => Err(Failure::Runtime(format!(
            "endpoint {endpoint} is not in the fleet of {} (`tasklane fleet` lists it)",
            g.store.display()
        ))),
        n => print_lines([format!("forgot endpoint {endpoint} ({n} process record{})", if n == 1 { "" } else { "s" })]),
    }
}

/// `tasklane fleet [--json] [--watch]`, or `tasklane fleet forget E`.
pub async fn fleet(g: &Global, args: FleetArgs) -> Result<(), Failure> {
    if let Some(FleetCommand::Forget { endpoint }) = &args.command {
        return forget(g, endpoint);
    }
    let brokers = brokers(g, "tasklane fleet")?;
    let store = open_store(g)?;
    let stop = stop_flag();
    let conn = connect(&brokers).await?;
    let outcome = async {
        let mut fleet = Fleet::open(&conn, store.clone()).await?;
        let result = loop {
            if let Err(e) = fleet.drain(Duration::from_millis(300)).await {
                break Err(e);
            }
            let members = read(&store);
            match members {
                Ok(m) => {
                    if args.watch && !args.json && std::io::stdout().is_terminal() {
                        print!("\x1b[2J\x1b[H");
                    }
                    if let Err(f) = print(&m, args.json) {
                        break Ok(Err(f));
                    }
                }
                Err(f) => break Ok(Err(f)),
            }
            if !args.watch {
                break Ok(Ok(()));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(args.every);
            while tokio::time::Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if stop.load(Ordering::SeqCst) {
                break Ok(Ok(()));
            }
            if let Err(f) = print_lines([String::new()]) {
                break Ok(Err(f));
            }
        };
        fleet.close().await;
        result
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
    let outcome: Result<Result<(), Failure>, ServiceError> = outcome;
    outcome.map_err(service_failure)?
}

/// `tasklane dashboard --listen ADDR`, until SIGINT/SIGTERM.
pub async fn dashboard(g: &Global, args: DashboardArgs) -> Result<(), Failure> {
    let opts = brokers(g, "tasklane dashboard")?;
    let store = open_store(g)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::runtime(format!("dashboard address {}: cannot listen", args.listen), e))?;
    let options = DashboardOptions { refresh_secs: args.refresh, window: args.window, ..DashboardOptions::default() };
    let dashboard = Dashboard::start(listener, store, opts, options);
    crate::cmd::wait_for_signal().await;
    dashboard.stop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasklane_core::EndpointId;
    use tasklane_io::fleet::{EndpointState, StatusReport};
    use tasklane_io::service::FleetRecord;

    #[test]
    fn the_table_has_a_line_per_endpoint_and_says_who_went_stale() {
        let mut a = StatusReport::new(&EndpointId::new("ep-a").unwrap(), EndpointState::Consuming);
        a.node = Some("127.0.0.1:5672".into());
        a.spool.inbox = 3;
        a.counters.insert("completed".into(), 117);
        a.pid = 4711;
        let mut b = StatusReport::new(&EndpointId::new("ep-b").unwrap(), EndpointState::Standby);
        b.interval_secs = 1;
        b.pid = 815;
        let now = 1_000_000;
        a.sent_at_ms = now - 400;
        b.sent_at_ms = now - 5_000;
        let members = vec![
            FleetMember { record: FleetRecord { report: a, seen_ms: now - 400 }, now_ms: now },
            FleetMember { record: FleetRecord { report: b, seen_ms: now - 5_000 }, now_ms: now },
        ];
        let lines = table(&members);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "endpoint  state      node            pid   inbox  outbox  completed  last seen");
        assert_eq!(lines[1], "ep-a      consuming  127.0.0.1:5672  4711  3      0       117        0.4 s ago");
        assert_eq!(
            lines[2],
            "ep-b      stale      -               815   0      0       0          5.0 s ago (last said standby)"
        );
    }
}
