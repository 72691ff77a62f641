//! Harness for the integration tests against a real RabbitMQ.
//!
//! The broker is the one `scripts/ensure-rabbitmq.sh` makes sure of:
//! AMQP on 127.0.0.1:5672 and the management API on 127.0.0.1:15672, both
//! with guest/guest.
//!
//! - [`Vhost`]: a fresh virtual host per test, so tests that run side by
//!   side (and share names like the `results` queue) cannot see each other.
//!   Deleted on drop.
//! - [`FaultProxy`]: a TCP proxy between a client and the broker that can cut
//!   every connection, freeze traffic, or refuse new connections.
//! - [`cluster`]: the 3-node cluster of `scripts/ensure-cluster.sh`, with a
//!   guard that serialises the tests that kill its nodes.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tasklane_tests::{FaultProxy, Vhost};
//!
//! let vhost = Vhost::create()?;
//! let proxy = FaultProxy::start(tasklane_tests::broker_addr()).await?;
//! let url = proxy.url_for(&vhost); // hand this to the endpoint
//! // ... run the endpoint, then:
//! proxy.cut_all();
//! # Ok(()) }
//! ```

mod cli;
pub mod cluster;
mod proxy;
mod vhost;

use std::net::SocketAddr;

pub use cli::{tasklane_bin, ResultLine, Running, Tasklane};
pub use proxy::{FaultProxy, ProxyStats};
pub use vhost::{vhost_exists, Broker, PeekedMessage, QueueCounts, QueueInfo, Vhost};

/// Where the broker's AMQP listener is.
pub const BROKER_AMQP: &str = "127.0.0.1:5672";
/// Base URL of the broker's management HTTP API.
pub const BROKER_MANAGEMENT: &str = "http://127.0.0.1:15672";

/// The broker's AMQP address, as a socket address (for [`FaultProxy::start`]).
pub fn broker_addr() -> SocketAddr {
    BROKER_AMQP.parse().expect("BROKER_AMQP is a socket address")
}

/// An AMQP URL with guest/guest for `vhost` at `addr`.
pub fn amqp_url(addr: SocketAddr, vhost: &str) -> String {
    format!("amqp://guest:guest@{addr}/{}", percent_encode(vhost))
}

/// amqprs connection arguments (guest/guest) for `vhost` at `addr`, without
/// going through a URL (amqprs parses URLs only with its `urispec` feature).
pub fn amqp_args(addr: SocketAddr, vhost: &str) -> amqprs::connection::OpenConnectionArguments {
    let mut args =
        amqprs::connection::OpenConnectionArguments::new(&addr.ip().to_string(), addr.port(), "guest", "guest");
    args.virtual_host(vhost);
    args
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so the
/// result is one path segment (`/` becomes `%2F`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What went wrong while talking to the broker's management API or AMQP port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The management API answered with an unexpected status.
    #[error("management API {method} {path}: HTTP {status}: {body}")]
    Management {
        /// HTTP method of the request.
        method: &'static str,
        /// Path of the request, below the API's base URL.
        path: String,
        /// Status code of the answer.
        status: u16,
        /// Body of the answer, as text.
        body: String,
    },
    /// The management API could not be reached or its answer not read.
    #[error("management API {method} {path}: {source} (is RabbitMQ up? run scripts/ensure-rabbitmq.sh)")]
    Http {
        /// HTTP method of the request.
        method: &'static str,
        /// Path of the request, below the API's base URL.
        path: String,
        /// The client's error.
        source: ureq::Error,
    },
    /// The management API answered with something that is not what it documents.
    #[error("management API {path}: unexpected answer: {detail}")]
    Unexpected {
        /// Path of the request, below the API's base URL.
        path: String,
        /// What was wrong with it.
        detail: String,
    },
    /// An AMQP operation failed.
    #[error("AMQP: {0}")]
    Amqp(#[from] amqprs::error::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(percent_encode("tasklane-test-1_2.3~"), "tasklane-test-1_2.3~");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("a b/c%"), "a%20b%2Fc%25");
    }

    #[test]
    fn amqp_url_puts_the_encoded_vhost_in_the_path() {
        let addr: SocketAddr = "127.0.0.1:5999".parse().unwrap();
        assert_eq!(amqp_url(addr, "v/1"), "amqp://guest:guest@127.0.0.1:5999/v%2F1");
    }
}
