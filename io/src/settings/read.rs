//! Reading settings from TOML and from `TASKLANE_*` variables: one table of
//! keys, one parser per key, the same checks for both sources.

use tasklane_core::{ConsumeMode, Failover};

use super::EndpointSettings;

/// Prefix of the environment variables: `TASKLANE_` + the key in capitals.
pub const ENV_PREFIX: &str = "TASKLANE_";

/// Every key a settings file may have.
pub const KEYS: [&str; 17] = [
    "amqp_url",
    "amqp_urls",
    "failover",
    "tls_ca",
    "endpoint",
    "spool_dir",
    "metrics",
    "heartbeat_secs",
    "blocked_timeout_secs",
    "shutdown_grace_secs",
    "prefetch",
    "consume_mode",
    "max_spooled_tasks",
    "max_spooled_bytes",
    "max_body_bytes",
    "workers",
    "report_interval_secs",
];

/// Most `--exec` commands side by side: far beyond any machine's cores,
/// low enough that a typo (an extra zero or two) is caught.
pub const MAX_WORKERS: usize = 4096;

/// Longest blocked-connection timeout: a day. A larger one would only
/// postpone the reconnect past any use, and an unbounded one could overflow
/// the deadline arithmetic.
const MAX_BLOCKED_TIMEOUT_SECS: i64 = 86_400;

/// Longest shutdown grace: an hour (a process manager kills long before).
const MAX_SHUTDOWN_GRACE_SECS: i64 = 3_600;

/// A value as a source gives it.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

fn text(raw: Raw) -> Result<String, String> {
    let s = match raw {
        Raw::Toml(toml::Value::String(s)) => s.as_str(),
        Raw::Toml(v) => return Err(format!("must be a string, not {}", article(v.type_str()))),
        Raw::Env(s) => s,
    };
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_string())
}

/// A list of strings: a TOML array, or a comma-separated variable.
fn list(raw: Raw) -> Result<Vec<String>, String> {
    let items: Vec<String> = match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s.clone()),
                v => Err(format!("must be an array of strings, not of {}s", v.type_str())),
            })
            .collect::<Result<_, _>>()?,
        Raw::Toml(v) => return Err(format!("must be an array of strings, not {}", article(v.type_str()))),
        Raw::Env(s) => s.split(',').map(str::to_string).collect(),
    };
    if items.is_empty() {
        return Err("must name at least one URL".into());
    }
    Ok(items)
}

fn int(raw: Raw, min: i64, max: i64) -> Result<i64, String> {
    let n = match raw {
        Raw::Toml(toml::Value::Integer(n)) => *n,
        Raw::Toml(v) => return Err(format!("must be an integer, not {}", article(v.type_str()))),
        Raw::Env(s) => s.trim().parse().map_err(|_| format!("must be an integer, not {s:?}"))?,
    };
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be from {min} to {max}, not {n}"))
    }
}

fn article(type_str: &str) -> String {
    match type_str {
        "integer" | "array" => format!("an {type_str}"),
        _ => format!("a {type_str}"),
    }
}

/// Sets `key` from `raw`. `Ok(false)`: no such key.
fn assign(s: &mut EndpointSettings, key: &str, raw: Raw) -> Result<bool, String> {
    let big = i64::MAX;
    match key {
        "amqp_url" => {
            s.amqp_url = Some(text(raw)?);
            s.amqp_urls = None;
        }
        "amqp_urls" => {
            s.amqp_urls = Some(list(raw)?);
            s.amqp_url = None;
        }
        "failover" => {
            s.failover = Some(match text(raw)?.trim() {
                "in-order" => Failover::InOrder,
                "shuffle" => Failover::Shuffle,
                other => return Err(format!("must be \"in-order\" or \"shuffle\", not {other:?}")),
            })
        }
        "tls_ca" => s.tls_ca = Some(text(raw)?.into()),
        "endpoint" => s.endpoint = Some(text(raw)?),
        "spool_dir" => s.spool_dir = Some(text(raw)?.into()),
        "metrics" => {
            let addr = text(raw)?;
            let parsed = addr.trim().parse().map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:9464"))?;
            s.metrics = Some(parsed);
        }
        "heartbeat_secs" => s.heartbeat_secs = Some(int(raw, 1, u16::MAX.into())? as u16),
        "blocked_timeout_secs" => s.blocked_timeout_secs = Some(int(raw, 1, MAX_BLOCKED_TIMEOUT_SECS)? as u64),
        "shutdown_grace_secs" => s.shutdown_grace_secs = Some(int(raw, 1, MAX_SHUTDOWN_GRACE_SECS)? as u64),
        "prefetch" => s.prefetch = Some(int(raw, 1, u16::MAX.into())? as u16),
        "consume_mode" => {
            s.consume_mode = Some(match text(raw)?.trim() {
                "single-active" => ConsumeMode::SingleActive,
                "exclusive" => ConsumeMode::Exclusive,
                other => return Err(format!("must be \"single-active\" or \"exclusive\", not {other:?}")),
            })
        }
        "max_spooled_tasks" => s.max_spooled_tasks = Some(int(raw, 1, big)? as usize),
        "max_spooled_bytes" => s.max_spooled_bytes = Some(int(raw, 1, big)? as u64),
        "max_body_bytes" => s.max_body_bytes = Some(int(raw, 1, big)? as usize),
        "workers" => s.workers = Some(int(raw, 1, MAX_WORKERS as i64)? as usize),
        "report_interval_secs" => s.report_interval_secs = Some(int(raw, 0, MAX_BLOCKED_TIMEOUT_SECS)? as u64),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Line (from 1) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// Reads the TOML `text` of file `source` into `s`; every problem found.
pub(super) fn toml_into(s: &mut EndpointSettings, text: &str, source: &str) -> super::Problems {
    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            let at = e.span().map(|span| format!(" (line {})", line_of(text, span.start))).unwrap_or_default();
            let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
            return super::Problems(vec![format!("{source}: not valid TOML{at}: {message}")]);
        }
    };
    let mut problems = Vec::new();
    if table.contains_key("amqp_url") && table.contains_key("amqp_urls") {
        problems.push(format!("{source}: amqp_url and amqp_urls: give one of them, not both"));
    }
    for (key, value) in &table {
        match assign(s, key, Raw::Toml(value)) {
            Ok(true) => {}
            Ok(false) => problems.push(format!("{source}: {key}: unknown setting (known: {})", KEYS.join(", "))),
            Err(problem) => problems.push(format!("{source}: {key}: {problem}")),
        }
    }
    super::Problems(problems)
}

/// Applies the `TASKLANE_<KEY>` variables among `vars` to `s`; every
/// problem found. Variables that name no key are left alone: other tools
/// use the prefix too. A variable set to nothing (or blanks) counts as
/// unset, as shells and service managers leave `VAR=` behind.
pub(super) fn env_into(s: &mut EndpointSettings, vars: impl IntoIterator<Item = (String, String)>) -> super::Problems {
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    for (var, value) in vars {
        let key = var[ENV_PREFIX.len()..].to_lowercase();
        if !KEYS.contains(&key.as_str()) || value.trim().is_empty() {
            continue;
        }
        if let Err(problem) = assign(s, &key, Raw::Env(&value)) {
            problems.push(format!("{var}: {problem}"));
        }
    }
    super::Problems(problems)
}
