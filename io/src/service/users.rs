//! Per-endpoint RabbitMQ users (SPEC §2, authorisation): endpoint `E`
//! logs in as user `E`, who may
//! - read (consume, get, ack) only the queue `E.tasks`,
//! - write (publish) only to the exchange `results`, and there — by a
//!   topic permission — only with the routing keys `E.results` (results)
//!   and `E.status` (status reports); and to the exchange `tasklane.dead`,
//!   where the poison quarantine ([`crate::amqp::quarantine`]) puts the
//!   tasks its client cannot decode, with the reason,
//! - configure nothing: declaring, deleting or binding anything is refused.
//!
//! So one endpoint's credentials can neither drain another's tasks nor
//! answer in its name. The service's ownership check on results stays:
//! it also catches a result sent under the right key for a task that
//! belongs to someone else.
//!
//! The user carries the tag [`USER_TAG`]; an existing user without it is
//! never touched, so provisioning an endpoint named like a human operator
//! cannot reset that person's password.

use serde_json::{json, Value};
use tasklane_core::EndpointId;

use super::management::{segment, Management, ManagementError};
use super::topology::{DEAD, RESULTS};

/// The tag every endpoint user carries, marking it as tasklane's.
pub const USER_TAG: &str = "tasklane-endpoint";

/// The permissions of an endpoint user in one vhost: regular expressions
/// over resource names, as RabbitMQ takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Which queues and exchanges the user may declare, delete, bind.
    pub configure: String,
    /// Which exchanges the user may publish to (and queues bind to):
    /// `results` and `tasklane.dead`.
    pub write: String,
    /// Which queues the user may consume from.
    pub read: String,
    /// The topic permission on exchange `results`: routing keys the user
    /// may publish with.
    pub results_write: String,
    /// The topic permission on exchange `results`: routing keys the user
    /// may bind with (none).
    pub results_read: String,
}

impl Permissions {
    /// The permissions of endpoint `endpoint`'s user.
    pub fn for_endpoint(endpoint: &EndpointId) -> Self {
        // Endpoint ids are [A-Za-z0-9_-]: nothing to escape but the dot.
        Self {
            configure: "^$".into(),
            write: format!("^({}|{})$", escape(RESULTS), escape(DEAD)),
            read: format!("^{}$", escape(&endpoint.task_queue())),
            results_write: format!(
                "^({}|{})$",
                escape(&endpoint.result_key()),
                escape(&crate::fleet::status_key(endpoint))
            ),
            results_read: "^$".into(),
        }
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What [`provision_user`] did.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointUser {
    /// The user name (the endpoint id).
    pub username: String,
    /// The new password, when the user was created or its password rotated;
    /// `None` when an existing user kept its password. Shown once: the
    /// broker keeps only a hash.
    pub password: Option<String>,
    /// Whether the user was created by this call.
    pub created: bool,
}

impl std::fmt::Debug for EndpointUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointUser")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("created", &self.created)
            .finish()
    }
}

/// Why an endpoint user cannot be provisioned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The management API failed.
    #[error(transparent)]
    Management(#[from] ManagementError),
    /// A user of that name exists and is not an endpoint user.
    #[error("a RabbitMQ user {0:?} exists and is not a tasklane endpoint user (no tag {USER_TAG:?}); not touching it")]
    Foreign(String),
}

/// A fresh password: a v4 UUID (122 bits from the OS's randomness) in hex.
fn generate_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn tags_of(user: &Value) -> Vec<String> {
    match &user["tags"] {
        // 3.10 answers a list; older versions a comma-separated string.
        Value::Array(tags) => tags.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        Value::String(tags) => tags.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect(),
        _ => Vec::new(),
    }
}

/// Creates endpoint `endpoint`'s user if missing (with a generated
/// password), or gives an existing endpoint user a new password when
/// `rotate` is set, and grants it exactly [`Permissions::for_endpoint`] in
/// `vhost` (replacing what it had there). Idempotent otherwise.
pub async fn provision_user(
    api: &Management,
    vhost: &str,
    endpoint: &EndpointId,
    rotate: bool,
) -> Result<EndpointUser, UserError> {
    let username = endpoint.as_str().to_string();
    let user_path = format!("/users/{}", segment(&username));
    let existing = api.get(&user_path).await?;
    if let Some(user) = &existing {
        if !tags_of(user).iter().any(|t| t == USER_TAG) {
            return Err(UserError::Foreign(username));
        }
    }
    let password = if existing.is_none() || rotate { Some(generate_password()) } else { None };
    if let Some(password) = &password {
        api.put(&user_path, &json!({ "password": password, "tags": USER_TAG })).await?;
    }
    grant(api, vhost, endpoint).await?;
    Ok(EndpointUser { username, password, created: existing.is_none() })
}

/// Grants endpoint `endpoint`'s user its permissions in `vhost`.
pub async fn grant(api: &Management, vhost: &str, endpoint: &EndpointId) -> Result<(), ManagementError> {
    let p = Permissions::for_endpoint(endpoint);
    let user = segment(endpoint.as_str());
    let vh = segment(vhost);
    api.put(
        &format!("/permissions/{vh}/{user}"),
        &json!({ "configure": p.configure, "write": p.write, "read": p.read }),
    )
    .await?;
    api.put(
        &format!("/topic-permissions/{vh}/{user}"),
        &json!({ "exchange": RESULTS, "write": p.results_write, "read": p.results_read }),
    )
    .await
}

/// Deletes endpoint `endpoint`'s user (everywhere: users are per broker).
/// `false` if it did not exist; an error for a user that is not an
/// endpoint user.
pub async fn delete_user(api: &Management, endpoint: &EndpointId) -> Result<bool, UserError> {
    let user_path = format!("/users/{}", segment(endpoint.as_str()));
    match api.get(&user_path).await? {
        None => Ok(false),
        Some(user) if !tags_of(&user).iter().any(|t| t == USER_TAG) => {
            Err(UserError::Foreign(endpoint.as_str().to_string()))
        }
        Some(_) => Ok(api.delete(&user_path).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_name_only_the_endpoints_own_resources() {
        let p = Permissions::for_endpoint(&EndpointId::new("ep-1_A").unwrap());
        assert_eq!(p.configure, "^$");
        assert_eq!(p.write, "^(results|tasklane\\.dead)$");
        assert_eq!(p.read, "^ep-1_A\\.tasks$");
        assert_eq!(p.results_write, "^(ep-1_A\\.results|ep-1_A\\.status)$");
        assert_eq!(p.results_read, "^$");
    }

    #[test]
    fn passwords_are_long_and_fresh() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn tags_come_as_a_list_or_a_string() {
        assert_eq!(tags_of(&json!({"tags": ["a", "tasklane-endpoint"]})), vec!["a", USER_TAG]);
        assert_eq!(tags_of(&json!({"tags": "administrator, x"})), vec!["administrator", "x"]);
        assert!(tags_of(&json!({})).is_empty());
    }
}
