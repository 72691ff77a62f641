//! [`EndpointConfig`]: everything an endpoint needs, in one value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tasklane_core::{Config, ConsumeMode, EndpointId, Failover};

use crate::amqp::{ConnectOptions, UrlListError};
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
///
/// // A cluster: one URL per node, each with its own credentials and vhost.
/// let cfg = EndpointConfig::new("amqp://ep-1:pw@node1:5672/prod,amqp://ep-1:pw@node2:5672/prod", "ep-1", "/tmp/s")?;
/// assert_eq!(cfg.brokers.len(), 2);
/// # Ok::<(), tasklane_io::endpoint::EndpointError>(())
/// ```
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The broker's addresses (a cluster's nodes), each with its URL,
    /// heartbeat and connection name. Core picks which one to try next
    /// (`lane.addresses`, `lane.failover`).
    pub brokers: Vec<ConnectOptions>,
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
    /// A configuration with defaults for endpoint `id` at the broker `urls`
    /// (one URL, or several separated by commas), spooling in `spool_dir`.
    /// Connections are named after the endpoint unless a URL names them,
    /// and the jitter seed is drawn at random so that endpoints do not
    /// reconnect in lockstep (nor pick the same node first).
    pub fn new(urls: &str, id: &str, spool_dir: impl AsRef<Path>) -> Result<Self, super::EndpointError> {
        let endpoint = EndpointId::new(id).map_err(|e| super::EndpointError::EndpointId(id.to_string(), e))?;
        Self::with_brokers(ConnectOptions::parse_list(urls)?, endpoint, spool_dir)
    }

    /// [`EndpointConfig::new`] from parsed broker options (at least one).
    pub fn with_brokers(
        mut brokers: Vec<ConnectOptions>,
        endpoint: EndpointId,
        spool_dir: impl AsRef<Path>,
    ) -> Result<Self, super::EndpointError> {
        for b in &mut brokers {
            if b.connection_name.is_none() {
                b.connection_name = Some(format!("tasklane endpoint {endpoint}"));
            }
        }
        let mut lane = Config::new(endpoint);
        lane.seed = uuid::Uuid::new_v4().as_u64_pair().0;
        lane.addresses = brokers.len();
        lane.validate()?;
        Ok(Self { brokers, spool_dir: spool_dir.as_ref().to_path_buf(), spool: SpoolOptions::default(), lane })
    }

    /// The order in which the broker addresses are tried.
    pub fn failover(mut self, failover: Failover) -> Self {
        self.lane.failover = failover;
        self
    }

    /// Trusts the CAs in PEM file `path` for every `amqps://` broker.
    pub fn tls_ca(mut self, path: impl AsRef<Path>) -> Self {
        for b in &mut self.brokers {
            b.tls.ca_file = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Broker prefetch window.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.lane.prefetch = prefetch;
        self
    }

    /// Heartbeat in seconds (the lower of this and the broker's wins).
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        for b in &mut self.brokers {
            b.heartbeat = seconds;
        }
        self
    }

    /// How long a `connection.blocked` may last before reconnecting.
    pub fn blocked_timeout(mut self, timeout: Duration) -> Self {
        self.lane.blocked_timeout = timeout;
        self
    }

    /// Longest `Endpoint::shutdown` (and so SIGTERM) waits for the spool to
    /// commit what was issued; past it the endpoint stops anyway, and the
    /// broker delivers what was not acked again later. Default 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.lane.shutdown_grace = grace;
        self
    }

    /// Most tasks plus results, and most payload bytes, the spool holds
    /// before intake waits.
    pub fn spool_bounds(mut self, tasks: usize, bytes: u64) -> Self {
        self.lane.max_spooled_tasks = tasks;
        self.lane.max_spooled_bytes = bytes;
        self
    }

    /// How often the endpoint publishes a status report to the service's
    /// `tasklane.status` (and on every status change); zero sends none.
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.lane.report_interval = (!interval.is_zero()).then_some(interval);
        self
    }

    /// How the task queue is claimed against a duplicate endpoint.
    pub fn consume_mode(mut self, mode: ConsumeMode) -> Self {
        self.lane.consume_mode = mode;
        self
    }
}

impl From<UrlListError> for super::EndpointError {
    fn from(e: UrlListError) -> Self {
        super::EndpointError::Url(e)
    }
}

impl super::Endpoint {
    /// Opens the spool and starts the endpoint on amqprs and LMDB. Returns
    /// without waiting for the broker: spooled tasks are handed out and
    /// results recorded even while it is unreachable, and connecting goes
    /// on in the background.
    pub async fn open(config: EndpointConfig) -> Result<Self, super::EndpointError> {
        Self::open_observed(config, super::NoObserver).await
    }

    /// [`Endpoint::open`] with an [`Observer`](super::Observer) watching the
    /// lane (tests plug the auditor in here, see [`super::audit`]).
    pub async fn open_observed<O: super::Observer + Send>(
        config: EndpointConfig,
        observer: O,
    ) -> Result<Self, super::EndpointError> {
        config.lane.validate()?;
        let EndpointConfig { brokers, spool_dir, spool: spool_opts, lane: mut lane_cfg } = config;
        lane_cfg.addresses = brokers.len();
        let opened = tokio::task::spawn_blocking(move || crate::spool::open(spool_dir, &spool_opts))
            .await
            .expect("spool open does not panic")?;
        let urls: Vec<String> = brokers.iter().map(|b| b.url.to_string()).collect();
        let span = tracing::info_span!("endpoint", id = %lane_cfg.endpoint);
        let (inbox, outbox) = (opened.snapshot.inbox.len(), opened.snapshot.outbox.len());
        span.in_scope(|| tracing::info!(urls = %urls.join(","), inbox, outbox, "endpoint opened"));
        let broker = super::rabbitmq::AmqprsBroker { brokers };
        let spool = super::lmdb::LmdbSpoolPort::new(opened.writer, opened.reader, opened.reports);
        let (mut endpoint, driver) = Self::start(lane_cfg, opened.snapshot, broker, spool, observer)?;
        endpoint.corrupt = opened.corrupt;
        tokio::spawn(tracing::Instrument::instrument(driver, span));
        Ok(endpoint)
    }
}
