//! `tasklane dashboard`: one web page for operators, the role Flower plays
//! for Celery. A background loop drains `tasklane.status` into the store
//! every second; every request renders the page from the store, so the
//! page shows what `tasklane fleet` shows.
//!
//! Dead letters: the page lists what the service itself dead-lettered
//! (results and reports, with their reasons, as it recorded them), not a
//! peek into `tasklane.dead`: peeking through the management API requeues
//! the messages (marking them redelivered), competes with whoever consumes
//! that queue, shows only its oldest head and needs administrator
//! credentials. Tasks the endpoints reject show in their `rejected` counter.

mod chart;
mod page;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use page::{render, Snapshot};

use super::{members, throughput, Fleet};
use crate::service::Brokers;
use crate::service::{now_ms, ServiceError, TaskStore};

/// How the page looks and refreshes.
#[derive(Clone, Copy, Debug)]
pub struct DashboardOptions {
    /// Seconds between the page's reloads.
    pub refresh_secs: u32,
    /// How far back the throughput chart goes.
    pub window: Duration,
    /// Bars in the throughput chart.
    pub bins: usize,
    /// How often `tasklane.status` is drained.
    pub drain_every: Duration,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self { refresh_secs: 5, window: Duration::from_secs(600), bins: 60, drain_every: Duration::from_secs(1) }
    }
}

struct Shared {
    store: TaskStore,
    options: DashboardOptions,
    link: Mutex<Result<String, String>>,
}

/// A running dashboard: the page server and the drain loop.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    server: JoinHandle<()>,
    drainer: JoinHandle<()>,
}

impl Dashboard {
    /// Serves the page on `listener` and keeps draining `tasklane.status`
    /// of the broker `connect` names into `store`, reconnecting as needed.
    pub fn start(listener: TcpListener, store: TaskStore, connect: Brokers, options: DashboardOptions) -> Self {
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared { store, options, link: Mutex::new(Err("connecting".into())) });
        tracing::info!(%addr, "dashboard on http://{addr}/");
        let drainer = tokio::spawn(drain_loop(shared.clone(), connect));
        let app = Router::new().route("/", get(index)).route("/fleet.json", get(fleet_json)).with_state(shared);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("dashboard server: {e}");
            }
        });
        Self { addr, server, drainer }
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and draining.
    pub fn stop(self) {
        self.server.abort();
        self.drainer.abort();
    }
}

async fn drain_loop(shared: Arc<Shared>, connect: Brokers) {
    let mut last = None;
    loop {
        let outcome = drain_session(&shared, &connect).await;
        let why = match outcome {
            Ok(()) => "the connection closed".to_string(),
            Err(e) => e,
        };
        // Once per reason, not once per retry (again after a session).
        if shared.link.lock().expect("not poisoned").is_ok() {
            last = None;
        }
        if last.as_ref() != Some(&why) {
            tracing::warn!("dashboard: not draining tasklane.status: {why}");
            last = Some(why.clone());
        }
        *shared.link.lock().expect("not poisoned") = Err(why);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One connection's worth of draining; returns why it ended.
async fn drain_session(shared: &Shared, connect: &Brokers) -> Result<(), String> {
    // One round over the nodes, each attempt bounded by the connect timeout.
    let (conn, info) = connect.connect().await.map_err(|e| e.to_string())?;
    let opened = Fleet::open(&conn, shared.store.clone()).await;
    let mut fleet = match opened {
        Ok(f) => f,
        Err(e) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
            return Err(hint(e));
        }
    };
    tracing::info!(peer = %info.peer, "dashboard: draining tasklane.status");
    *shared.link.lock().expect("not poisoned") = Ok(info.peer.to_string());
    let ended = loop {
        if let Err(e) = fleet.drain(Duration::from_millis(200)).await {
            break Err(hint(e));
        }
        tokio::time::sleep(shared.options.drain_every).await;
    };
    fleet.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
    ended
}

fn hint(e: ServiceError) -> String {
    match &e {
        ServiceError::Amqp(a) if a.reply_code() == Some(404) => {
            format!("{e}; run `tasklane provision <endpoint>` to declare tasklane.status")
        }
        _ => e.to_string(),
    }
}

fn snapshot(shared: &Shared) -> Result<Snapshot, String> {
    let store = &shared.store;
    let o = shared.options;
    let now = now_ms();
    let window_ms = o.window.as_millis() as u64;
    let samples = store.samples(now.saturating_sub(window_ms + 60_000)).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        members: members(store).map_err(|e| e.to_string())?,
        tasks: store.counts().map_err(|e| e.to_string())?,
        dead: store.dead_letters(20).map_err(|e| e.to_string())?,
        throughput: throughput(&samples, now, window_ms, o.bins),
        window_secs: o.window.as_secs(),
        link: shared.link.lock().expect("not poisoned").clone(),
        now_ms: now,
        refresh_secs: o.refresh_secs,
    })
}

async fn index(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let shared2 = shared.clone();
    match tokio::task::spawn_blocking(move || snapshot(&shared2)).await {
        Ok(Ok(s)) => Html(render(&s).into_string()).into_response(),
        Ok(Err(e)) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the store: {e}\n")).into_response()
        }
        Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn fleet_json(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match members(&shared.store) {
        Ok(m) => Json(m.iter().map(super::view::member_json).collect::<Vec<_>>()).into_response(),
        Err(e) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the store: {e}\n")).into_response()
        }
    }
}
