//! The dashboard's one page, rendered on the server from the store.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::chart;
use crate::fleet::{FleetMember, Shown};
use crate::service::{DeadLetter, TaskCounts};

/// Everything the page shows, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The fleet, ordered by endpoint id.
    pub members: Vec<FleetMember>,
    /// Tracked tasks by state.
    pub tasks: TaskCounts,
    /// Recent dead letters, newest first.
    pub dead: Vec<DeadLetter>,
    /// Results per second, oldest bin first, over `window_secs`.
    pub throughput: Vec<f64>,
    /// The chart's width in time.
    pub window_secs: u64,
    /// Whether the dashboard drains `tasklane.status`, or why not.
    pub link: Result<String, String>,
    /// When, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Seconds between reloads.
    pub refresh_secs: u32,
}

const CSS: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #fafbfc; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; background: #fff; } th, td { padding: .3em .7em; border-bottom: 1px solid #e3e6ea; text-align: left; }
th { background: #f0f2f5; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { display: inline-block; padding: 0 .6em; border-radius: .8em; color: #fff; font-weight: 600; }
.state-consuming { background: #1f9d55; } .state-standby { background: #3b82c4; } .state-connecting { background: #8a94a6; }
.state-disconnected { background: #d9822b; } .state-blocked { background: #c0392b; } .state-closed { background: #5f6b7a; }
.state-stale { background: #1d2330; } .muted { color: #6b7280; } .link-down { color: #c0392b; font-weight: 600; }
svg .axis { stroke: #8a94a6; } svg .label { font-size: 11px; fill: #4b5563; } svg .bar { fill: #3b82c4; }
svg .inbox { fill: #3b82c4; } svg .outbox { fill: #d9822b; }
";

fn ago(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    match ms {
        0..=119_999 => format!("{s:.1} s ago"),
        120_000..=7_199_999 => format!("{} min ago", ms / 60_000),
        _ => format!("{} h ago", ms / 3_600_000),
    }
}

fn clock(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The whole page.
pub fn render(s: &Snapshot) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(s.refresh_secs);
                title { "tasklane fleet" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "tasklane fleet" }
                p.muted {
                    @let ids = s.members.iter().map(FleetMember::endpoint).collect::<std::collections::BTreeSet<_>>().len();
                    (ids) " endpoints"
                    @if ids != s.members.len() { " (" (s.members.len()) " processes)" }
                    " · " (clock(s.now_ms)) " · reloads every " (s.refresh_secs) " s · "
                    @match &s.link {
                        Ok(node) => span id="link" { "draining tasklane.status on " (node) },
                        Err(why) => span id="link" class="link-down" { "not draining tasklane.status: " (why) },
                    }
                }
                h2 { "Endpoints" }
                (fleet_table(&s.members))
                h2 { "Spool depths" }
                @if s.members.is_empty() { p.muted { "no endpoint has reported yet" } } @else { (chart::spool_depths(&s.members)) }
                h2 { "Throughput (results completed per second, whole fleet)" }
                (chart::throughput(&s.throughput, s.window_secs))
                h2 { "Tasks by state" }
                (tasks_table(&s.tasks))
                h2 { "Recently dead-lettered by the service" }
                (dead_table(&s.dead))
            }
        }
    }
}

fn fleet_table(members: &[FleetMember]) -> Markup {
    html! {
        table id="fleet" {
            thead { tr {
                th { "endpoint" } th { "state" } th { "reason" } th { "node" } th { "inbox" } th { "outbox" }
                th { "completed" } th { "rejected" } th { "last seen" } th { "host" } th { "version" }
            } }
            tbody {
                @for m in members {
                    @let r = m.report();
                    @let shown = m.state();
                    tr id=(format!("endpoint-{}-{}-{}", m.endpoint(), r.host, r.pid)) data-endpoint=(m.endpoint())
                        data-state=(shown.as_str()) {
                        td { (m.endpoint()) }
                        td { span class=(format!("state state-{shown}")) { (shown) } }
                        td {
                            @if let Shown::Stale(said) = shown { "silent; last said " (said) " " }
                            (r.reason.as_deref().unwrap_or(""))
                            @if let Some(full) = &r.spool.full { " spool full: " (full) }
                        }
                        td { (r.node.as_deref().unwrap_or("—")) }
                        td.num { (r.spool.inbox) }
                        td.num { (r.spool.outbox) }
                        td.num { (r.counter("completed")) }
                        td.num { (r.counter("rejected")) }
                        td { (ago(m.seen_ago_ms())) }
                        td { (r.host) " (pid " (r.pid) ")" }
                        td { (r.version) }
                    }
                }
            }
        }
    }
}

fn tasks_table(t: &TaskCounts) -> Markup {
    html! {
        table id="tasks" {
            thead { tr { th { "submitted" } th { "ok" } th { "failed" } th { "dead-lettered" } th { "tracked" } } }
            tbody { tr {
                td.num { (t.submitted) } td.num { (t.ok) } td.num { (t.failed) } td.num { (t.dead_lettered) }
                td.num { (t.total()) }
            } }
        }
    }
}

fn dead_table(dead: &[DeadLetter]) -> Markup {
    html! {
        @if dead.is_empty() {
            p.muted { "nothing" }
        } @else {
            table id="dead" {
                thead { tr { th { "when" } th { "queue" } th { "routing key" } th { "message id" } th { "reason" } th { "detail" } } }
                tbody {
                    @for d in dead {
                        tr {
                            td { (clock(d.at_ms)) } td { (d.queue) } td { (d.routing_key) }
                            td { (d.message_id.as_deref().unwrap_or("—")) } td { (d.reason) } td { (d.detail) }
                        }
                    }
                }
            }
        }
    }
}
