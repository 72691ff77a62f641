//! The TLS client configuration of an `amqps://` connection, built once
//! from [`TlsOptions`] for both amqprs (through `TlsAdaptor::new`) and
//! tasklane's own raw AMQP client (the quarantine scan), so that both
//! trust the same CAs, present the same client certificate and check the
//! same name.
//!
//! It does what amqprs' `TlsAdaptor::without_client_auth` and
//! `with_client_auth` do (the CA file's certificates as the only roots, or
//! the public web roots without one), but answers a bad file with an error
//! where amqprs panics.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{ConnectOptions, Error};

/// A connector for `opts`, and the name the broker's certificate must be
/// valid for (`server_name_indication`, or the URL's host).
pub(crate) fn connector(opts: &ConnectOptions) -> Result<(TlsConnector, String), Error> {
    // amqprs leaves the choice of crypto provider to the application; an
    // error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = &opts.tls;
    let mut roots = RootCertStore::empty();
    match &t.ca_file {
        Some(ca) => {
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| Error::Tls(format!("CA file {}: {e}", ca.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let config = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    let domain = t.server_name.clone().unwrap_or_else(|| opts.url.host().to_string());
    Ok((TlsConnector::from(Arc::new(config)), domain))
}

/// `domain` as rustls checks it against the certificate (a DNS name or an
/// IP address).
pub(crate) fn server_name(domain: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(domain.to_string())
        .map_err(|e| Error::Tls(format!("{domain:?} cannot be checked against a certificate: {e}")))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let failed = |e: rustls::pki_types::pem::Error| Error::Tls(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path).map_err(failed)?.collect::<Result<Vec<_>, _>>().map_err(failed)?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate in it", path.display())));
    }
    Ok(certs)
}
