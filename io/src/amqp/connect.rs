//! Opening a connection: resolve the host, connect to each address in
//! turn (over TLS for `amqps://`), and say where we ended up.
//!
//! amqprs opens its own socket and does not tell which address it reached;
//! tasklane resolves the host itself and hands amqprs one address at a
//! time, so the peer address in [`ConnectionInfo`] is the one actually
//! connected to. For TLS the certificate is still checked against the
//! URL's host (or `server_name_indication`), not the address.

use std::net::SocketAddr;

use super::{ConnectOptions, Error};
pub use crate::endpoint::ConnectionInfo;
use amqprs::connection::Connection;
use amqprs::tls::TlsAdaptor;

/// Opens a connection. Runs the handshake to completion; a broker that
/// accepts TCP but never answers keeps this pending, so callers that need a
/// deadline give up on the result rather than dropping the future early.
pub async fn connect(opts: &ConnectOptions) -> Result<Connection, Error> {
    connect_with_info(opts).await.map(|(conn, _)| conn)
}

/// [`connect`], also saying which address was reached and what the broker is.
pub async fn connect_with_info(opts: &ConnectOptions) -> Result<(Connection, ConnectionInfo), Error> {
    let url = &opts.url;
    let failed = |source| Error::Connect { url: url.to_string(), source };
    let tls = if url.is_tls() { Some(tls_adaptor(opts)?) } else { None };
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((url.host(), url.port())).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Err(failed(amqprs::error::Error::NetworkError(format!("cannot resolve {}: {e}", url.host()))))
        }
    };
    let mut last = None;
    for peer in addrs {
        let mut args = opts.to_arguments();
        args.host(&peer.ip().to_string());
        if let Some(tls) = &tls {
            args.tls_adaptor(tls.clone());
        }
        match Connection::open(&args).await {
            Ok(conn) => {
                let server = conn.server_properties();
                let info = ConnectionInfo {
                    name: conn.connection_name().to_string(),
                    node: format!("{}:{}", url.host(), url.port()),
                    peer,
                    tls: tls.is_some(),
                    vhost: url.vhost().to_string(),
                    user: url.username().to_string(),
                    heartbeat: conn.heartbeat(),
                    broker: format!("{} {}", server.product(), server.version()).trim().to_string(),
                    cluster: server.cluster_name().to_string(),
                };
                return Ok((conn, info));
            }
            // The next address may answer where this one refused; a broker
            // that answered and said no (credentials, vhost) will not change
            // its mind on another address.
            Err(e @ amqprs::error::Error::NetworkError(_)) => last = Some(e),
            Err(e) => return Err(failed(e)),
        }
    }
    Err(failed(
        last.unwrap_or_else(|| amqprs::error::Error::NetworkError(format!("{} resolves to no address", url.host()))),
    ))
}

/// The TLS connector for `opts` (see [`super::tls`]).
fn tls_adaptor(opts: &ConnectOptions) -> Result<TlsAdaptor, Error> {
    let (connector, domain) = super::tls::connector(opts)?;
    Ok(TlsAdaptor::new(connector, domain))
}
