//! [`EndpointSettings`]: an endpoint's configuration as operators write it,
//! in a TOML file with `TASKLANE_*` environment overrides, validated in
//! one go into an [`EndpointConfig`].
//!
//! The service decides the heartbeat and the blocked-connection timeout and
//! hands them to the endpoint here (SPEC §2); the endpoint follows.
//!
//! ```
//! use tasklane_io::settings::EndpointSettings;
//! let file = r#"
//!     amqp_url = "amqp://ep-1:secret@127.0.0.1:5672/%2f"
//!     endpoint = "ep-1"
//!     spool_dir = "/var/lib/tasklane/ep-1"
//!     heartbeat_secs = 10
//!     blocked_timeout_secs = 30
//! "#;
//! let mut settings = EndpointSettings::from_toml(file, "ep-1.toml")?;
//! // The environment wins over the file.
//! settings.apply_env([("TASKLANE_PREFETCH".to_string(), "200".to_string())])?;
//! let (cfg, metrics) = settings.build()?;
//! assert_eq!((cfg.brokers[0].heartbeat, cfg.lane.blocked_timeout.as_secs(), cfg.lane.prefetch), (10, 30, 200));
//! assert!(metrics.is_none());
//! # Ok::<(), tasklane_io::settings::Problems>(())
//! ```
//!
//! Every problem is reported, each on a line of its own, rather than the
//! first one only: an operator fixes a file in one round.

mod read;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tasklane_core::{ConsumeMode, EndpointId, Failover};

use crate::amqp::ConnectOptions;
use crate::endpoint::EndpointConfig;

pub use read::{ENV_PREFIX, KEYS, MAX_WORKERS};

/// Everything wrong with a configuration, one problem a line.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Problems(pub Vec<String>);

impl Problems {
    fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// An endpoint's settings, each one optional until [`EndpointSettings::build`]
/// fills in defaults and checks that they fit together. Later sources
/// overwrite earlier ones: file, then environment, then whatever the caller
/// sets (e.g. command-line flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSettings {
    /// `amqp_url`: the broker (the path is the vhost), or a cluster's
    /// nodes separated by commas. Setting it unsets `amqp_urls`.
    pub amqp_url: Option<String>,
    /// `amqp_urls`: a cluster's nodes, one URL each (instead of
    /// `amqp_url`). Setting it unsets `amqp_url`.
    pub amqp_urls: Option<Vec<String>>,
    /// `failover`: the order in which the nodes are tried, `in-order` or
    /// `shuffle` (the default).
    pub failover: Option<Failover>,
    /// `tls_ca`: PEM file of the CAs to trust for `amqps://`.
    pub tls_ca: Option<PathBuf>,
    /// `endpoint`: the endpoint id.
    pub endpoint: Option<String>,
    /// `spool_dir`: the spool's directory.
    pub spool_dir: Option<PathBuf>,
    /// `metrics`: address to serve Prometheus metrics on.
    pub metrics: Option<SocketAddr>,
    /// `heartbeat_secs`: AMQP heartbeat, decided by the service.
    pub heartbeat_secs: Option<u16>,
    /// `blocked_timeout_secs`: how long a `connection.blocked` may last
    /// before the endpoint reconnects, decided by the service.
    pub blocked_timeout_secs: Option<u64>,
    /// `shutdown_grace_secs`: longest a shutdown (SIGTERM) waits for the
    /// spool to commit before the process ends anyway.
    pub shutdown_grace_secs: Option<u64>,
    /// `prefetch`: the broker's prefetch window.
    pub prefetch: Option<u16>,
    /// `consume_mode`: `single-active` or `exclusive`.
    pub consume_mode: Option<ConsumeMode>,
    /// `max_spooled_tasks`: most tasks plus results in the spool.
    pub max_spooled_tasks: Option<usize>,
    /// `max_spooled_bytes`: most payload bytes in the spool.
    pub max_spooled_bytes: Option<u64>,
    /// `max_body_bytes`: largest task accepted.
    pub max_body_bytes: Option<usize>,
    /// `workers`: how many `--exec` commands of `tasklane endpoint` run side
    /// by side (default: the number of cores). Not part of the library's
    /// [`EndpointConfig`]: how tasks are run is the application's choice.
    pub workers: Option<usize>,
    /// `report_interval_secs`: how often the endpoint publishes a status
    /// report to the service (and on every status change); 0 sends none.
    pub report_interval_secs: Option<u64>,
}

impl EndpointSettings {
    /// Settings read from the TOML text of file `source` (named in
    /// problems). Unknown keys and values of the wrong type or range are
    /// problems; a key that is absent stays unset.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, Problems> {
        let mut settings = Self::default();
        settings.merge_toml(text, source)?;
        Ok(settings)
    }

    /// Overrides settings with those in the TOML text of file `source`.
    /// On problems, the good keys are still taken, so that a later
    /// [`EndpointSettings::build`] reports only problems of its own.
    pub fn merge_toml(&mut self, text: &str, source: &str) -> Result<(), Problems> {
        read::toml_into(self, text, source).into_result()
    }

    /// Overrides settings with those in the TOML file at `path`.
    pub fn merge_file(&mut self, path: &std::path::Path) -> Result<(), Problems> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problems(vec![format!("{}: cannot read: {e}", path.display())]))?;
        self.merge_toml(&text, &path.display().to_string())
    }

    /// The file at `path` (if any), then the `TASKLANE_<KEY>` variables
    /// among `vars` over it: the settings, and every problem of both, so a
    /// caller can add its own and report them all at once.
    pub fn load(
        path: Option<&std::path::Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> (Self, Vec<String>) {
        let mut settings = Self::default();
        let mut problems = Vec::new();
        if let Some(Err(Problems(p))) = path.map(|path| settings.merge_file(path)) {
            problems.extend(p);
        }
        if let Err(Problems(p)) = settings.apply_env(vars) {
            problems.extend(p);
        }
        (settings, problems)
    }

    /// Overrides settings from `TASKLANE_<KEY>` variables among `vars` (pass
    /// `std::env::vars()`); other variables are ignored.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), Problems> {
        read::env_into(self, vars).into_result()
    }

    /// The endpoint's configuration and the metrics address, or every
    /// problem found. `endpoint`, `spool_dir` and `amqp_url` are required;
    /// the rest has the library's defaults.
    pub fn build(&self) -> Result<(EndpointConfig, Option<SocketAddr>), Problems> {
        let mut problems = Vec::new();
        let mut missing = |key: &str| {
            problems.push(format!("{key}: missing (set it in the file or as {ENV_PREFIX}{})", key.to_uppercase()))
        };
        let endpoint = self.endpoint.as_deref().or_else(|| {
            missing("endpoint");
            None
        });
        let spool_dir = self.spool_dir.as_deref().or_else(|| {
            missing("spool_dir");
            None
        });
        if self.amqp_url.is_none() && self.amqp_urls.is_none() {
            missing("amqp_url");
        }
        if let Some(id) = endpoint {
            if let Err(e) = EndpointId::new(id) {
                problems.push(format!("endpoint: {id:?} is not an endpoint id: {e}"));
            }
        }
        let brokers = match (&self.amqp_url, &self.amqp_urls) {
            (Some(url), _) => Some(("amqp_url", ConnectOptions::parse_list(url))),
            (None, Some(urls)) => Some(("amqp_urls", ConnectOptions::parse_each(urls.iter().map(String::as_str)))),
            (None, None) => None,
        };
        if let Some((key, Err(e))) = &brokers {
            problems.extend(e.to_string().lines().map(|line| format!("{key}: {line}")));
        }
        if self.blocked_timeout_secs == Some(0) {
            problems.push("blocked_timeout_secs: must be at least 1".into());
        }
        let body = self.max_body_bytes.map(|b| b as u64);
        if let (Some(bytes), Some(body)) = (self.max_spooled_bytes, body) {
            if bytes < body {
                problems.push(format!(
                    "max_spooled_bytes: {bytes} is less than max_body_bytes {body}: a large task could never be stored"
                ));
            }
        }
        Problems(problems).into_result()?;
        let (Some((_, Ok(brokers))), Some(endpoint), Some(spool_dir)) = (brokers, endpoint, spool_dir) else {
            unreachable!("missing settings are problems")
        };
        let endpoint = EndpointId::new(endpoint).expect("checked above");
        let mut cfg =
            EndpointConfig::with_brokers(brokers, endpoint, spool_dir).map_err(|e| Problems(vec![e.to_string()]))?;
        if let Some(failover) = self.failover {
            cfg = cfg.failover(failover);
        }
        if let Some(ca) = &self.tls_ca {
            cfg = cfg.tls_ca(ca);
        }
        if let Some(secs) = self.heartbeat_secs {
            cfg = cfg.heartbeat(secs);
        }
        if let Some(secs) = self.blocked_timeout_secs {
            cfg = cfg.blocked_timeout(Duration::from_secs(secs));
        }
        if let Some(secs) = self.shutdown_grace_secs {
            cfg = cfg.shutdown_grace(Duration::from_secs(secs));
        }
        if let Some(prefetch) = self.prefetch {
            cfg = cfg.prefetch(prefetch);
        }
        if let Some(mode) = self.consume_mode {
            cfg = cfg.consume_mode(mode);
        }
        if let Some(secs) = self.report_interval_secs {
            cfg = cfg.report_interval(Duration::from_secs(secs));
        }
        let lane = &mut cfg.lane;
        lane.max_spooled_tasks = self.max_spooled_tasks.unwrap_or(lane.max_spooled_tasks);
        lane.max_spooled_bytes = self.max_spooled_bytes.unwrap_or(lane.max_spooled_bytes);
        lane.max_body_bytes = self.max_body_bytes.unwrap_or(lane.max_body_bytes);
        // What the checks above cannot see (a bound set against a default).
        lane.validate().map_err(|e| Problems(vec![e.to_string()]))?;
        Ok((cfg, self.metrics))
    }
}

#[cfg(test)]
mod tests;
