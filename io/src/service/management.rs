//! A small client of RabbitMQ's management HTTP API
//! (<https://www.rabbitmq.com/docs/management#http-api>), for what AMQP
//! cannot do: users and permissions.
//!
//! Blocking (ureq) under the hood; every call runs on tokio's blocking pool.
//! Plain HTTP only: the API usually listens on the broker's own host.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::amqp::AmqpUrl;

/// The management API's port when the operator names none.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;

/// Why a management API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagementError {
    /// The management URL cannot be used.
    #[error("management API URL {0:?}: {1}")]
    Url(String, &'static str),
    /// The API could not be reached, or its answer not read.
    #[error("management API {method} {path}: {detail} (is the rabbitmq_management plugin enabled?)")]
    Http {
        /// HTTP method.
        method: &'static str,
        /// Path below `/api`.
        path: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// The API refused the request.
    #[error("management API {method} {path}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Path below `/api`.
        path: String,
        /// HTTP status code (401: bad credentials; 403: the user is not an administrator).
        status: u16,
        /// The API's answer.
        body: String,
    },
    /// The API's answer is not what it documents.
    #[error("management API {path}: unexpected answer: {detail}")]
    Unexpected {
        /// Path below `/api`.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// The blocking pool is gone (the runtime is shutting down).
    #[error("cancelled: the runtime is shutting down")]
    Cancelled,
}

/// Where the management API is and whom to log in as.
#[derive(Clone)]
pub struct Management {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Management({})", self.base)
    }
}

/// One answer: any HTTP status is an answer, only transport failures are errors.
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
}

impl Management {
    /// The API at `base` (`http://host:port`, no path), as `username`.
    pub fn new(base: &str, username: &str, password: &str) -> Result<Self, ManagementError> {
        let trimmed = base.trim().trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("http://")
            .ok_or_else(|| ManagementError::Url(base.to_string(), "must start with http://"))?;
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(ManagementError::Url(
                base.to_string(),
                "must be http://host:port, without credentials or path",
            ));
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Self { base: trimmed.to_string(), auth: format!("Basic {token}"), agent })
    }

    /// The API on the broker of `url`, port 15672, with the URL's credentials.
    pub fn for_broker(url: &AmqpUrl) -> Self {
        let host = if url.host().contains(':') { format!("[{}]", url.host()) } else { url.host().to_string() };
        Self::new(&format!("http://{host}:{DEFAULT_MANAGEMENT_PORT}"), url.username(), url.password())
            .expect("a URL built from a parsed host is valid")
    }

    /// The base URL, `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api{path}`, `None` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<Value>, ManagementError> {
        let answer = self.call("GET", path, None).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        let answer = expect_success("GET", path, answer)?;
        serde_json::from_str(&answer.body)
            .map(Some)
            .map_err(|e| ManagementError::Unexpected { path: path.to_string(), detail: e.to_string() })
    }

    /// `PUT /api{path}` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> Result<(), ManagementError> {
        let answer = self.call("PUT", path, Some(body.clone())).await?;
        expect_success("PUT", path, answer).map(drop)
    }

    /// `DELETE /api{path}`; `false` if there was nothing to delete.
    pub async fn delete(&self, path: &str) -> Result<bool, ManagementError> {
        let answer = self.call("DELETE", path, None).await?;
        if answer.status == 404 {
            return Ok(false);
        }
        expect_success("DELETE", path, answer).map(|_| true)
    }

    async fn call(&self, method: &'static str, path: &str, body: Option<Value>) -> Result<Answer, ManagementError> {
        let (agent, auth) = (self.agent.clone(), self.auth.clone());
        let url = format!("{}/api{path}", self.base);
        let owned_path = path.to_string();
        tokio::task::spawn_blocking(move || {
            let sent = match (method, body) {
                ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
                ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
                (_, Some(body)) => agent.put(&url).header("authorization", &auth).send_json(&body),
                (_, None) => agent.put(&url).header("authorization", &auth).send_empty(),
            };
            let http =
                |e: ureq::Error| ManagementError::Http { method, path: owned_path.clone(), detail: e.to_string() };
            let mut response = sent.map_err(http)?;
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().map_err(http)?;
            Ok(Answer { status, body })
        })
        .await
        .map_err(|_| ManagementError::Cancelled)?
    }
}

fn expect_success(method: &'static str, path: &str, answer: Answer) -> Result<Answer, ManagementError> {
    if (200..300).contains(&answer.status) {
        Ok(answer)
    } else {
        Err(ManagementError::Status { method, path: path.to_string(), status: answer.status, body: answer.body })
    }
}

/// Percent-encodes one path segment (a vhost `/` becomes `%2F`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(Management::new("http://h:15672/", "u", "p").unwrap().base(), "http://h:15672");
        assert!(Management::new("https://h", "u", "p").is_err());
        assert!(Management::new("http://u:p@h", "u", "p").is_err());
        assert!(Management::new("http://h/api", "u", "p").is_err());
        let url = AmqpUrl::parse("amqp://a:b@[::1]:5673/v").unwrap();
        assert_eq!(Management::for_broker(&url).base(), "http://[::1]:15672");
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("ep-1.x_~"), "ep-1.x_~");
    }
}
