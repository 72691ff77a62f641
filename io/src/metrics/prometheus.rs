//! A [`StatusReport`] as Prometheus metrics, rendered by the Prometheus
//! project's own `prometheus-client` (OpenMetrics text), and served with
//! axum on `GET /metrics` (and the report as JSON on `GET /status`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CONNECTION, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::report::{counter_fields, StatusReport, STATUSES};
use crate::endpoint::Endpoint;

/// The content type of OpenMetrics text, which Prometheus reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// A label value as the exposition format quotes it. `prometheus-client`
/// writes label values as they are.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn gauge(registry: &mut Registry, name: &str, help: &str, labels: &Labels, value: i64) {
    let family = Family::<Labels, Gauge>::default();
    family.get_or_create(labels).set(value);
    registry.register(name, help, family);
}

/// `report` in the OpenMetrics text format. Every series carries the label
/// `endpoint`; counters are `tasklane_<counter>_total`.
pub fn render(report: &StatusReport) -> String {
    let mut registry = Registry::default();
    let ep: Labels = vec![("endpoint".into(), escape(&report.endpoint))];
    for (name, help, _) in counter_fields(&Default::default()) {
        let family = Family::<Labels, Counter>::default();
        family.get_or_create(&ep).inc_by(report.counter(name));
        registry.register(format!("tasklane_{name}"), help, family);
    }
    let inbox = i64::try_from(report.spool_inbox).unwrap_or(i64::MAX);
    let outbox = i64::try_from(report.spool_outbox).unwrap_or(i64::MAX);
    gauge(&mut registry, "tasklane_spool_inbox", "Tasks in the spool's inbox (received, not completed).", &ep, inbox);
    gauge(&mut registry, "tasklane_spool_outbox", "Results in the spool's outbox (not yet confirmed).", &ep, outbox);
    let full = i64::from(report.spool_full.is_some());
    let help = "Whether intake waits for the spool (disk space below the floor, or a write refused).";
    gauge(&mut registry, "tasklane_spool_full", help, &ep, full);
    if let Some(reason) = &report.spool_full {
        let mut labels = ep.clone();
        labels.push(("reason".into(), escape(reason)));
        registry.register("tasklane_spool_full_reason", "Why intake waits for the spool.", Info::new(labels));
    }
    let status = Family::<Labels, Gauge>::default();
    for s in STATUSES {
        let mut labels = ep.clone();
        labels.push(("status".into(), s.into()));
        status.get_or_create(&labels).set(i64::from(report.status == s));
    }
    registry.register("tasklane_status", "The endpoint's connection status: 1 for the current one.", status);
    let connected = i64::from(report.connection.is_some());
    let help = "Whether the endpoint has a live connection to the broker.";
    gauge(&mut registry, "tasklane_connected", help, &ep, connected);
    if let Some(c) = &report.connection {
        let mut labels = ep.clone();
        for (k, v) in [
            ("name", escape(&c.name)),
            ("node", escape(&c.node)),
            ("peer", c.peer.to_string()),
            ("tls", c.tls.to_string()),
            ("broker", escape(&c.broker)),
            ("vhost", escape(&c.vhost)),
            ("user", escape(&c.user)),
        ] {
            labels.push((k.into(), v));
        }
        let help = "The live connection: its name and the broker's address.";
        registry.register("tasklane_connection", help, Info::new(labels));
    }
    if let Some(secs) = report.disconnected_secs {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        family.get_or_create(&ep).set(secs);
        registry.register("tasklane_disconnected_seconds", "How long the endpoint has been disconnected.", family);
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// A metrics address bound but not yet served: bind before the endpoint
/// opens, so that a taken port stops a start before anything connects.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// Serves `endpoint`'s metrics until stopped.
    pub fn serve(self, endpoint: Arc<Endpoint>) -> MetricsServer {
        let Self { listener, addr } = self;
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "try /metrics or /status\n") })
            // A scrape every few seconds: one request per connection, as
            // simple clients (and the tests) expect.
            .layer(axum::middleware::map_response(|mut r: Response| async move {
                r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                r
            }))
            .with_state(endpoint);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("metrics server: {e}");
            }
        });
        MetricsServer { addr, task }
    }
}

impl MetricsServer {
    /// Binds `addr` and serves `endpoint`'s metrics until stopped; a taken
    /// port is an error here.
    pub async fn start(addr: SocketAddr, endpoint: Arc<Endpoint>) -> std::io::Result<Self> {
        Ok(MetricsListener::bind(addr).await?.serve(endpoint))
    }

    /// The address it listens on (with the port chosen, if 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS)], render(&StatusReport::of(&endpoint)))
}

async fn status(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    let json = serde_json::to_string_pretty(&StatusReport::of(&endpoint)).unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], json + "\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::amqp::ConnectionInfo;

    #[test]
    fn renders_counters_depths_status_and_connection() {
        let mut counters = BTreeMap::new();
        counters.insert("received".to_string(), 7);
        let report = StatusReport {
            endpoint: "ep\"1".into(),
            pid: 1,
            updated_unix_ms: 0,
            status: "consuming".into(),
            reason: None,
            disconnected_secs: None,
            connection: Some(ConnectionInfo {
                name: "tasklane endpoint ep".into(),
                node: "broker-1:5672".into(),
                peer: "127.0.0.1:5672".parse().unwrap(),
                tls: false,
                vhost: "/".into(),
                user: "ep".into(),
                heartbeat: 10,
                broker: "RabbitMQ 3.10.8".into(),
                cluster: "rabbit@localhost".into(),
            }),
            counters,
            spool_inbox: 3,
            spool_outbox: 2,
            spool_full: Some("12 MiB free, below the floor of 16 MiB".into()),
        };
        let text = render(&report);
        assert!(text.contains("tasklane_spool_full{endpoint=\"ep\\\"1\"} 1\n"), "{text}");
        assert!(text.contains("reason=\"12 MiB free, below the floor of 16 MiB\""), "{text}");
        assert!(report.status_line().ends_with("; spool full: 12 MiB free, below the floor of 16 MiB"));
        assert!(
            text.contains("# TYPE tasklane_received counter\ntasklane_received_total{endpoint=\"ep\\\"1\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("tasklane_acked_total{endpoint=\"ep\\\"1\"} 0\n"));
        assert!(text.contains("tasklane_spool_inbox{endpoint=\"ep\\\"1\"} 3\n"));
        assert!(text.contains("tasklane_status{endpoint=\"ep\\\"1\",status=\"consuming\"} 1\n"));
        assert!(text.contains("tasklane_status{endpoint=\"ep\\\"1\",status=\"standby\"} 0\n"));
        assert!(
            text.contains("name=\"tasklane endpoint ep\",node=\"broker-1:5672\",peer=\"127.0.0.1:5672\",tls=\"false\""),
            "{text}"
        );
        assert!(!text.contains("tasklane_disconnected_seconds"));
        assert!(text.ends_with("# EOF\n"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("tasklane_") && series.ends_with('}'), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
