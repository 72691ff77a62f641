//! Logs as operators expect them: on stderr, colours only on a terminal,
//! `--log-format json` (one object per line) for log shippers, and
//! `RUST_LOG` over the command's default level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Removes every `TASKLANE_*` variable that is set but empty (or blank), so
/// that it counts as unset everywhere: for the flags that read one, and
/// for the settings of `--config`. Called first thing, while the process
/// has one thread.
pub fn unset_empty_variables() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(k, v)| {
            k.to_str().is_some_and(|k| k.starts_with(tasklane_io::settings::ENV_PREFIX))
                && v.to_str().is_some_and(|v| v.trim().is_empty())
        })
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

/// Installs the subscriber: `format` is `text` or `json`.
pub fn init(default_level: &str, format: &str) {
    let filter = std::env::var("RUST_LOG").ok().filter(|f| !f.trim().is_empty());
    let filter = EnvFilter::new(filter.as_deref().unwrap_or(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
