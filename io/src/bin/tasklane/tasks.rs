//! `tasklane tasks`: the service's task tracking, filtered, from its own
//! store (no broker needed); `tasklane tasks prune` applies the retention
//! bound now.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use tasklane_core::EndpointId;
use tasklane_io::service::{Retention, StateFilter, TaskFilter, TrackedTask};

use crate::cmd::open_store;
use crate::failure::{print_lines, Failure};
use crate::Global;

/// `tasklane tasks`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TasksArgs {
    #[command(subcommand)]
    command: Option<TasksCommand>,
    /// Only the tasks of endpoint E.
    #[arg(long, value_name = "E", value_parser = crate::parse_endpoint)]
    endpoint: Option<EndpointId>,
    /// Only tasks in this state: submitted (no result yet), done (a result
    /// came, ok or failed), dead (its result was dead-lettered).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    state: Option<StateFilter>,
    /// Only tasks submitted longer ago than DUR (e.g. 90s, 15m, 2h, 7d).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// One JSON object per task: task_id, endpoint, state, submitted_ms, updated_ms.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TasksCommand {
    /// Remove what the retention bound (--retain-tasks, --retain-age) does
    /// not keep, now; prints how many tasks were removed.
    Prune,
}

fn parse_state(s: &str) -> Result<StateFilter, String> {
    s.parse()
}

/// A duration like `90s`, `15m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 90s, 15m, 2h or 7d ({e})"))
}

/// A duration as `--retain-age` takes it.
pub fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn clock(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn task_line(t: &TrackedTask, json: bool) -> String {
    if json {
        let obj = serde_json::json!({
            "task_id": t.id.as_str(),
            "endpoint": t.endpoint.as_str(),
            "state": t.state.as_str(),
            "submitted_ms": t.submitted_ms,
            "updated_ms": t.updated_ms,
        });
        obj.to_string()
    } else {
        let id: String = t.id.as_str().escape_debug().collect();
        format!("{id}\t{}\t{}\t{}\t{}", t.endpoint, t.state, clock(t.submitted_ms), clock(t.updated_ms))
    }
}

fn describe(r: &Retention) -> String {
    let count = r.max_tasks.map_or("no count bound".into(), |n| format!("at most {n} tasks"));
    let age = r.max_age.map_or("no age bound".into(), |d| format!("none older than {}", show_duration(d)));
    format!("{count}, {age}")
}

/// `tasklane tasks [...]` and `tasklane tasks prune`.
pub fn run(g: &Global, args: TasksArgs) -> Result<(), Failure> {
    let store = open_store(g)?;
    let fail = |e| Failure::runtime(format!("task store {}", g.store.display()), e);
    match args.command {
        Some(TasksCommand::Prune) => {
            let removed = store.prune().map_err(fail)?;
            let kept = store.len().map_err(fail)?;
            println!("pruned {removed} tasks; {kept} tracked ({})", describe(&store.retention()));
        }
        None => {
            let filter = TaskFilter { endpoint: args.endpoint, state: args.state, older_than: args.older_than };
            let tasks = store.query(&filter).map_err(fail)?;
            print_lines(tasks.iter().map(|t| task_line(t, args.json)))?;
        }
    }
    Ok(())
}
