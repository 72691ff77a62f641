//! The Prometheus text exposition format (version 0.0.4) of a
//! [`StatusReport`], and a tiny HTTP server that serves it.
//!
//! The server answers `GET /metrics` (Prometheus text) and `GET /status`
//! (the report as JSON), one request per connection. It is deliberately
//! small: a scrape every few seconds needs no HTTP framework.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::report::{counter_fields, StatusReport, STATUSES};
use crate::endpoint::Endpoint;

/// Longest request head read, and how long to wait for it.
const MAX_REQUEST: usize = 8 << 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `report` in the Prometheus text format. Every series carries the label
/// `endpoint`.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let ep = format!("endpoint=\"{}\"", escape(&report.endpoint));
    for (name, help, _) in counter_fields(&Default::default()) {
        let metric = format!("tasklane_{name}_total");
        family(&mut out, &metric, "counter", help);
        let _ = writeln!(out, "{metric}{{{ep}}} {}", report.counter(name));
    }
    family(&mut out, "tasklane_spool_inbox", "gauge", "Tasks in the spool's inbox (received, not completed).");
    let _ = writeln!(out, "tasklane_spool_inbox{{{ep}}} {}", report.spool_inbox);
    family(&mut out, "tasklane_spool_outbox", "gauge", "Results in the spool's outbox (not yet confirmed).");
    let _ = writeln!(out, "tasklane_spool_outbox{{{ep}}} {}", report.spool_outbox);
    family(&mut out, "tasklane_status", "gauge", "The endpoint's connection status: 1 for the current one.");
    for status in STATUSES {
        let v = u8::from(report.status == status);
        let _ = writeln!(out, "tasklane_status{{{ep},status=\"{status}\"}} {v}");
    }
    family(&mut out, "tasklane_connected", "gauge", "Whether the endpoint has a live connection to the broker.");
    let _ = writeln!(out, "tasklane_connected{{{ep}}} {}", u8::from(report.connection.is_some()));
    if let Some(c) = &report.connection {
        family(
            &mut out,
            "tasklane_connection_info",
            "gauge",
            "The live connection: its name and the broker's address.",
        );
        let _ = writeln!(
            out,
            "tasklane_connection_info{{{ep},name=\"{}\",peer=\"{}\",tls=\"{}\",broker=\"{}\",vhost=\"{}\",user=\"{}\"}} 1",
            escape(&c.name),
            c.peer,
            c.tls,
            escape(&c.broker),
            escape(&c.vhost),
            escape(&c.user)
        );
    }
    if let Some(secs) = report.disconnected_secs {
        family(&mut out, "tasklane_disconnected_seconds", "gauge", "How long the endpoint has been disconnected.");
        let _ = writeln!(out, "tasklane_disconnected_seconds{{{ep}}} {secs:.3}");
    }
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
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let endpoint = endpoint.clone();
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, &endpoint).await {
                                tracing::debug!("metrics request: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("metrics server: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
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

async fn answer(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&StatusReport::of(endpoint)))
        }
        ("GET", "/status") => {
            let json = serde_json::to_string_pretty(&StatusReport::of(endpoint)).unwrap_or_default();
            ("200 OK", "application/json", json + "\n")
        }
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics or /status\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
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
        };
        let text = render(&report);
        assert!(
            text.contains("# TYPE tasklane_received_total counter\ntasklane_received_total{endpoint=\"ep\\\"1\"} 7\n")
        );
        assert!(text.contains("tasklane_acked_total{endpoint=\"ep\\\"1\"} 0\n"));
        assert!(text.contains("tasklane_spool_inbox{endpoint=\"ep\\\"1\"} 3\n"));
        assert!(text.contains("tasklane_status{endpoint=\"ep\\\"1\",status=\"consuming\"} 1\n"));
        assert!(text.contains("tasklane_status{endpoint=\"ep\\\"1\",status=\"standby\"} 0\n"));
        assert!(text.contains("name=\"tasklane endpoint ep\",peer=\"127.0.0.1:5672\",tls=\"false\""));
        assert!(!text.contains("tasklane_disconnected_seconds"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("tasklane_") && series.ends_with('}'), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
