//! [`EndpointConfig`]: everything an endpoint needs, in one value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tasklane_core::{Config, ConsumeMode, EndpointId};

use crate::amqp::{ConnectOptions, UrlError};
use crate::spool::SpoolOptions;

/// How to run an endpoint: where the broker and the spool are, and the
/// lane's policy knobs. The service decides heartbeat and blocked timeout
/// and hands them over (SPEC §2); the rest has working defaults.
///
/// ```
/// use std::time::Duration;
/// use tasklane_io::endpoint::EndpointConfig;
/// let cfg = EndpointConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "ep-1", "/tmp/ep-1-spool")?
///     .prefetch(500)
///     .heartbeat(10)
///     .blocked_timeout(Duration::from_secs(30))
///     .spool_bounds(50_000, 512 << 20);
/// assert_eq!(cfg.lane.endpoint.task_queue(), "ep-1.tasks");
/// # Ok::<(), tasklane_io::endpoint::EndpointError>(())
/// ```
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Broker URL, heartbeat and connection name.
    pub amqp: ConnectOptions,
    /// Directory of the LMDB spool (created if missing). One endpoint per
    /// directory.
    pub spool_dir: PathBuf,
    /// LMDB map sizes.
    pub spool: SpoolOptions,
    /// The lane's configuration (endpoint id, prefetch, consume mode, spool
    /// bounds, blocked timeout, backoff, jitter seed): core's, as is.
    pub lane: Config,
}

impl EndpointConfig {
    /// A configuration with defaults for endpoint `id` at broker `url`,
    /// spooling in `spool_dir`. The connection is named after the endpoint
    /// unless the URL names it, and the jitter seed is drawn at random so
    /// that endpoints do not reconnect in lockstep.
    pub fn new(url: &str, id: &str, spool_dir: impl AsRef<Path>) -> Result<Self, super::EndpointError> {
        let endpoint = EndpointId::new(id).map_err(|e| super::EndpointError::EndpointId(id.to_string(), e))?;
        let mut amqp = ConnectOptions::parse(url)?;
        if amqp.connection_name.is_none() {
            amqp.connection_name = Some(format!("tasklane endpoint {endpoint}"));
        }
        let mut lane = Config::new(endpoint);
        lane.seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Ok(Self { amqp, spool_dir: spool_dir.as_ref().to_path_buf(), spool: SpoolOptions::default(), lane })
    }

    /// Broker prefetch window.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.lane.prefetch = prefetch;
        self
    }

    /// Heartbeat in seconds (the lower of this and the broker's wins).
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.amqp.heartbeat = seconds;
        self
    }

    /// How long a `connection.blocked` may last before reconnecting.
    pub fn blocked_timeout(mut self, timeout: Duration) -> Self {
        self.lane.blocked_timeout = timeout;
        self
    }

    /// Most tasks plus results, and most payload bytes, the spool holds
    /// before intake waits.
    pub fn spool_bounds(mut self, tasks: usize, bytes: u64) -> Self {
        self.lane.max_spooled_tasks = tasks;
        self.lane.max_spooled_bytes = bytes;
        self
    }

    /// How the task queue is claimed against a duplicate endpoint.
    pub fn consume_mode(mut self, mode: ConsumeMode) -> Self {
        self.lane.consume_mode = mode;
        self
    }
}

impl From<UrlError> for super::EndpointError {
    fn from(e: UrlError) -> Self {
        super::EndpointError::Url(e)
    }
}
