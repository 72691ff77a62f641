//! `amqp://` and `amqps://` URLs after the RabbitMQ URI spec
//! (<https://www.rabbitmq.com/docs/uri-spec>), and the connection options
//! built from them.
//!
//! `amqps://` takes the TLS query parameters of RabbitMQ's URI query
//! parameter spec (<https://www.rabbitmq.com/docs/uri-query-parameters>):
//! `cacertfile` (PEM file of the CAs to trust instead of the public web
//! roots), `certfile` and `keyfile` (a client certificate, PEM), and
//! `server_name_indication` (the name to verify the broker's certificate
//! against, when it is not the host).
//!
//! amqprs can parse URLs itself (`OpenConnectionArguments::try_from`, feature
//! `urispec`), but in 2.1.5 it does not percent-decode the virtual host or
//! the credentials (`/%2f` becomes the vhost `%2f`, not `/`), it panics on a
//! query parameter without `=`, and it silently replaces a bad `heartbeat`
//! with the default. This parser follows the spec and says what is wrong in
//! one line.
//!
//! The `url` crate is not used either: it implements the WHATWG URL
//! standard, not RFC 3986 on which the RabbitMQ spec builds. For a scheme
//! it does not know (`amqp`) it keeps the host opaque (no check that it is
//! a name or an address), accepts port 0, silently drops tabs and line
//! breaks, and leaves user name, password and path percent-encoded, so the
//! parts the spec is about would still be decoded and checked here; its
//! errors do not name the part that is wrong; and it would bring `idna`
//! and its Unicode tables into a build that has no use for them. What is
//! left of a URL parser here is the split at `://`, `@`, `:`, `/` and `?`.
//!
//! A broker list (a cluster's nodes) is several URLs separated by commas
//! ([`ConnectOptions::parse_list`]) or given one by one
//! ([`ConnectOptions::parse_each`]); every URL is judged, and each bad one
//! is named by its position.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use amqprs::connection::OpenConnectionArguments;

const AMQP_PORT: u16 = 5672;
const AMQPS_PORT: u16 = 5671;
/// Heartbeat asked for when neither the URL nor the caller names one.
pub const DEFAULT_HEARTBEAT: u16 = 60;

/// Why a string is not a usable AMQP URL. The message names the part that
/// is wrong and never repeats the password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL does not start with `amqp://` or `amqps://`.
    #[error("AMQP URL must start with amqp:// or amqps://")]
    Scheme,
    /// No host between `//` and the port or path.
    #[error("AMQP URL has no host")]
    NoHost,
    /// The port is not a number in 1..=65535.
    #[error("AMQP URL port {0:?} is not a number in 1..=65535")]
    Port(String),
    /// A `%` not followed by two hex digits, or decoded bytes that are not UTF-8.
    #[error("AMQP URL {part} has invalid percent-encoding")]
    Encoding {
        /// Which part: user name, password, host, virtual host or a parameter.
        part: &'static str,
    },
    /// The path has more than one segment (a `/` inside a vhost must be `%2f`).
    #[error("AMQP URL path {0:?} has more than one segment; write a '/' inside the vhost as %2f")]
    Path(String),
    /// A query parameter that is malformed, unknown, or out of range.
    #[error("AMQP URL parameter {0}")]
    Param(String),
    /// A `#fragment`, which has no meaning here.
    #[error("AMQP URL must not have a #fragment")]
    Fragment,
    /// A broker list without any URL.
    #[error("no AMQP URL given")]
    Empty,
}

/// What is wrong with a list of AMQP URLs: each bad one by its position
/// (1-based; the URL itself is not repeated, it may hold a password). One
/// line per bad URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlListError {
    /// How many URLs the list held.
    pub count: usize,
    /// Position and problem of each bad URL.
    pub bad: Vec<(usize, UrlError)>,
}

impl fmt::Display for UrlListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (pos, e)) in self.bad.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            if self.count == 1 {
                write!(f, "{e}")?;
            } else {
                write!(f, "URL {pos} of {}: {e}", self.count)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for UrlListError {}

/// A parsed AMQP URL. `Display` shows it with the password replaced by
/// `***`, fit for logs and status lines.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    tls: bool,
    host: String,
    port: u16,
    username: String,
    password: String,
    vhost: String,
    heartbeat: Option<u16>,
    connection_name: Option<String>,
    tls_options: TlsOptions,
}

/// TLS settings of an `amqps://` connection. With no CA file, the broker's
/// certificate must chain to the public web roots (webpki-roots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CAs to trust (`cacertfile`).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain (`certfile`); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client's private key (`keyfile`).
    pub key_file: Option<PathBuf>,
    /// Name the broker's certificate must be valid for, when it is not the
    /// URL's host (`server_name_indication`).
    pub server_name: Option<String>,
}

impl AmqpUrl {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("amqps://") {
            (true, &url[8..])
        } else if lower.starts_with("amqp://") {
            (false, &url[7..])
        } else {
            return Err(UrlError::Scheme);
        };
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => ("guest".to_string(), "guest".to_string()),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (decode(u, "user name")?, decode(p, "password")?),
                None => (decode(ui, "user name")?, String::new()),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        let host = decode(host, "host")?;
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let port = match port {
            None => {
                if tls {
                    AMQPS_PORT
                } else {
                    AMQP_PORT
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| UrlError::Port(p.to_string()))?,
        };
        let vhost = match path {
            None | Some("") => "/".to_string(),
            Some(p) if p.contains('/') => return Err(UrlError::Path(p.to_string())),
            Some(p) => decode(p, "virtual host")?,
        };
        let mut parsed = Self {
            tls,
            host,
            port,
            username,
            password,
            vhost,
            heartbeat: None,
            connection_name: None,
            tls_options: TlsOptions::default(),
        };
        for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(UrlError::Param(format!("{pair:?} has no '=value'")));
            };
            let value = decode(value, "parameter")?;
            match key {
                "heartbeat" => {
                    let hb = value.parse::<u16>().map_err(|_| {
                        UrlError::Param(format!("heartbeat={value:?} is not a number of seconds in 0..=65535"))
                    })?;
                    parsed.heartbeat = Some(hb);
                }
                "connection_name" => parsed.connection_name = Some(value),
                "cacertfile" | "certfile" | "keyfile" | "server_name_indication" if !tls => {
                    return Err(UrlError::Param(format!("{key} needs an amqps:// URL")))
                }
                "cacertfile" => parsed.tls_options.ca_file = Some(value.into()),
                "certfile" => parsed.tls_options.cert_file = Some(value.into()),
                "keyfile" => parsed.tls_options.key_file = Some(value.into()),
                "server_name_indication" => parsed.tls_options.server_name = Some(value),
                other => {
                    return Err(UrlError::Param(format!(
                        "{other:?} is not supported (supported: heartbeat, connection_name, and with amqps:// \
                         cacertfile, certfile, keyfile, server_name_indication)"
                    )))
                }
            }
        }
        let t = &parsed.tls_options;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(UrlError::Param("certfile and keyfile go together".into()));
        }
        Ok(parsed)
    }

    /// Whether the URL asks for TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host name or address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// User name (`guest` when the URL names none).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Password (empty when the URL names a user without one).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Virtual host, percent-decoded (`/` when the URL names none).
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The `?heartbeat=` parameter, if given.
    pub fn heartbeat(&self) -> Option<u16> {
        self.heartbeat
    }

    /// The `?connection_name=` parameter, if given.
    pub fn connection_name(&self) -> Option<&str> {
        self.connection_name.as_deref()
    }

    /// The TLS parameters (all `None` for `amqp://`).
    pub fn tls_options(&self) -> &TlsOptions {
        &self.tls_options
    }
}

impl FromStr for AmqpUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{}:***@{host}:{}/{}", encode(&self.username), self.port, encode(&self.vhost))
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({self})")
    }
}

/// What [`crate::amqp::connect`] needs: where to connect, and the settings
/// the service hands to the endpoint (SPEC §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Where and as whom.
    pub url: AmqpUrl,
    /// Heartbeat in seconds the client asks for; the broker and the client
    /// settle on the lower of the two. amqprs cannot turn heartbeats off:
    /// 0 means "whatever the broker proposes".
    pub heartbeat: u16,
    /// Name shown in the broker's management UI and logs.
    pub connection_name: Option<String>,
    /// TLS settings, used when the URL is `amqps://`.
    pub tls: TlsOptions,
}

impl ConnectOptions {
    /// Options for `url`, taking heartbeat and connection name from the
    /// URL's parameters when it has them.
    pub fn new(url: AmqpUrl) -> Self {
        Self {
            heartbeat: url.heartbeat.unwrap_or(DEFAULT_HEARTBEAT),
            connection_name: url.connection_name.clone(),
            tls: url.tls_options.clone(),
            url,
        }
    }

    /// Parses `url` into options.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        AmqpUrl::parse(url).map(Self::new)
    }

    /// Parses a list of URLs separated by commas (a cluster's nodes, each
    /// with its own credentials and vhost), judging every one of them.
    pub fn parse_list(urls: &str) -> Result<Vec<Self>, UrlListError> {
        Self::parse_each(urls.split(','))
    }

    /// Parses each of `urls` (one node each), judging every one of them.
    /// An empty list is one bad URL.
    pub fn parse_each<'a>(urls: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, UrlListError> {
        let mut parsed = Vec::new();
        let mut bad = Vec::new();
        let mut count = 0;
        for (i, url) in urls.into_iter().enumerate() {
            count += 1;
            match Self::parse(url) {
                Ok(opts) => parsed.push(opts),
                Err(e) => bad.push((i + 1, e)),
            }
        }
        if count == 0 {
            return Err(UrlListError { count: 1, bad: vec![(1, UrlError::Empty)] });
        }
        if bad.is_empty() {
            Ok(parsed)
        } else {
            Err(UrlListError { count, bad })
        }
    }

    /// Sets the heartbeat, in seconds.
    pub fn with_heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat = seconds;
        self
    }

    /// Sets the connection name.
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Trusts the CAs in PEM file `path` for `amqps://`.
    pub fn with_tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// The amqprs arguments these options stand for, without TLS
    /// ([`crate::amqp::connect`] adds it, since it reads files).
    pub fn to_arguments(&self) -> OpenConnectionArguments {
        let u = &self.url;
        let mut args = OpenConnectionArguments::new(&u.host, u.port, &u.username, &u.password);
        args.virtual_host(&u.vhost).heartbeat(self.heartbeat);
        if let Some(name) = &self.connection_name {
            args.connection_name(name);
        }
        args
    }
}

impl FromStr for ConnectOptions {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), UrlError> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else { return Err(UrlError::NoHost) };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(UrlError::Port(after.to_string())),
            },
        };
    }
    Ok(match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    })
}

fn decode(s: &str, part: &'static str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(UrlError::Encoding { part })?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Encoding { part })?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Encoding { part })
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_url_with_its_encoded_vhost() {
        let u = AmqpUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!((u.host(), u.port(), u.username(), u.vhost()), ("127.0.0.1", 5672, "guest", "/"));
        assert_eq!(u.to_string(), "amqp://guest:***@127.0.0.1:5672/%2f");
        // amqprs' own parser keeps the encoding, which is why we parse ourselves.
        let theirs = OpenConnectionArguments::try_from("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(theirs.get_virtual_host(), "%2f");
    }

    #[test]
    fn defaults_decoding_and_parameters() {
        let u = AmqpUrl::parse("amqp://localhost").unwrap();
        assert_eq!((u.port(), u.username(), u.vhost(), u.heartbeat()), (5672, "guest", "/", None));
        let u = AmqpUrl::parse("AMQP://us%40er:p%3Ass@[::1]:5673/my%2fvh?heartbeat=7&connection_name=ep%201").unwrap();
        assert_eq!((u.host(), u.port(), u.username(), u.vhost()), ("::1", 5673, "us@er", "my/vh"));
        assert_eq!((u.heartbeat(), u.connection_name()), (Some(7), Some("ep 1")));
        assert!(!format!("{u} {u:?}").contains("p:ss"), "password must not be shown");
        let o = ConnectOptions::new(u).with_heartbeat(9).with_connection_name("x");
        let args = o.to_arguments();
        assert_eq!(
            (args.get_heartbeat(), args.get_virtual_host(), args.get_connection_name()),
            (9, "my/vh", Some("x"))
        );
    }

    #[test]
    fn amqps_takes_the_tls_parameters() {
        let u = AmqpUrl::parse("amqps://u:p@127.0.0.1/v?cacertfile=%2Fetc%2Fca.pem&server_name_indication=broker.lan")
            .unwrap();
        assert!(u.is_tls());
        assert_eq!(u.port(), 5671);
        assert_eq!(u.tls_options().ca_file.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(u.tls_options().server_name.as_deref(), Some("broker.lan"));
        assert_eq!(u.to_string(), "amqps://u:***@127.0.0.1:5671/v");
        let o = ConnectOptions::new(u).with_tls_ca("/other.pem");
        assert_eq!(o.tls.ca_file.as_deref(), Some(std::path::Path::new("/other.pem")));
    }

    #[test]
    fn a_list_is_judged_as_a_whole_naming_each_bad_url_by_position() {
        let ok = ConnectOptions::parse_list("amqp://a:1@n1:5673/v,amqp://b:2@n2:5674/w").unwrap();
        assert_eq!(ok.iter().map(|o| (o.url.host(), o.url.port())).collect::<Vec<_>>(), [("n1", 5673), ("n2", 5674)]);
        assert_eq!((ok[0].url.vhost(), ok[1].url.username()), ("v", "b"));
        let err = ConnectOptions::parse_list("amqp://n1,http://n2,amqp://n3:0,amqp://u:secret@n4").unwrap_err();
        assert_eq!(
            err.to_string(),
            "URL 2 of 4: AMQP URL must start with amqp:// or amqps://\n\
             URL 3 of 4: AMQP URL port \"0\" is not a number in 1..=65535"
        );
        let one = ConnectOptions::parse_list("amqp://h:x").unwrap_err();
        assert_eq!(one.to_string(), "AMQP URL port \"x\" is not a number in 1..=65535");
        assert!(ConnectOptions::parse_each([]).is_err(), "no URL at all is not a broker list");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |s: &str| AmqpUrl::parse(s).unwrap_err().to_string();
        assert_eq!(err("http://x"), "AMQP URL must start with amqp:// or amqps://");
        assert_eq!(err("amqp://"), "AMQP URL has no host");
        assert_eq!(err("amqp://h:99999"), "AMQP URL port \"99999\" is not a number in 1..=65535");
        assert_eq!(err("amqp://h:0"), "AMQP URL port \"0\" is not a number in 1..=65535");
        assert_eq!(
            err("amqp://h/a/b"),
            "AMQP URL path \"a/b\" has more than one segment; write a '/' inside the vhost as %2f"
        );
        assert_eq!(err("amqp://h/%zz"), "AMQP URL virtual host has invalid percent-encoding");
        assert_eq!(err("amqp://h?heartbeat"), "AMQP URL parameter \"heartbeat\" has no '=value'");
        assert!(err("amqp://h?heartbeat=-1").contains("heartbeat=\"-1\""));
        assert!(err("amqp://h?frame_max=1").contains("not supported"));
        assert_eq!(err("amqp://h#x"), "AMQP URL must not have a #fragment");
        assert!(err("amqp://h?cacertfile=/ca.pem").contains("needs an amqps:// URL"));
        assert_eq!(err("amqps://h?certfile=/c.pem"), "AMQP URL parameter certfile and keyfile go together");
        assert!(!err("amqp://u:secret@h:x").contains("secret"));
    }
}
