//! A small fleet for the fleet tests: each [`ReportingEndpoint`] publishes
//! real [`StatusReport`]s over AMQP the way an endpoint does (exchange
//! `results`, routing key `E.status`, transient, no confirms, a channel of
//! its own) every interval, from a thread of its own; "killing" it stops
//! the reports at once, as a SIGKILL would.
//!
//! Real endpoints do not publish reports yet; once `tasklane endpoint`
//! does, [`ReportingEndpoint::start`] can give way to
//! `tasklane_tests::Tasklane::endpoint` (a real process, `kill()` for
//! SIGKILL) with the endpoint's report interval set to one second.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tasklane_core::EndpointId;
use tasklane_io::amqp::{self, ConnectOptions};
use tasklane_io::fleet::{self, EndpointState, StatusReport};

/// An "endpoint" that only reports its status.
pub struct ReportingEndpoint {
    pub id: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReportingEndpoint {
    /// Starts reporting `state` for endpoint `id` to the broker at `url`
    /// every `interval_secs`, the first report at once. Each report
    /// completes 10 more tasks than the one before and holds `inbox` tasks.
    pub fn start(url: &str, id: &str, state: EndpointState, interval_secs: u32, inbox: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, endpoint, flag) = (url.to_string(), EndpointId::new(id).unwrap(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let conn = amqp::connect(&ConnectOptions::parse(&url).unwrap()).await.expect("broker");
                let channel = conn.open_channel(None).await.unwrap();
                let mut seq = 0u64;
                while !flag.load(Ordering::SeqCst) {
                    let mut report = StatusReport::new(&endpoint, state);
                    report.seq = seq;
                    report.interval_secs = interval_secs;
                    report.node = Some("127.0.0.1:5672".into());
                    report.spool.inbox = inbox;
                    report.counters.insert("completed".into(), seq * 10);
                    if state == EndpointState::Disconnected {
                        report.reason = Some("connection refused".into());
                        report.node = None;
                    }
                    fleet::publish(&channel, &report).await.expect("publish a report");
                    if seq == 0 {
                        let _ = ready_tx.send(());
                    }
                    seq += 1;
                    let next = tokio::time::Instant::now() + Duration::from_secs(interval_secs.into());
                    while tokio::time::Instant::now() < next && !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                // Killed: no goodbye, the connection just goes.
                drop(channel);
                drop(conn);
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(20)).expect("the first report was published");
        Self { id: id.to_string(), stop, thread: Some(thread) }
    }

    /// Stops reporting at once (the endpoint died).
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ReportingEndpoint {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes one message to exchange `results` with `routing_key`: a
/// spoofed or broken report.
pub async fn publish_raw(url: &str, routing_key: &str, raw: &tasklane_core::RawMessage) {
    let conn = amqp::connect(&ConnectOptions::parse(url).unwrap()).await.unwrap();
    let channel = conn.open_channel(None).await.unwrap();
    let props = fleet::publish_properties(raw).unwrap();
    channel.basic_publish(props, raw.body.to_vec(), amqp::publish_args("results", routing_key)).await.unwrap();
    let _ = channel.close().await;
    let _ = conn.close().await;
}
