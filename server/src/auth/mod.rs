//! Identity: tokens with roles, kept hashed in the replicated key space under
//! [`TOKENS_DIR`] (a hidden top-level directory outside `/_shoal`, so neither
//! the fleet's watches nor `/api/v1/events` carry them), the members' own
//! credential, and the first admin token. [`policy`] decides who may do what;
//! `crate::http::auth` applies both to every request on the client port.
//!
//! A record is `/_auth/tokens/<id>` = [`TokenRecord`]: the token's id is the
//! first 16 hex digits of its SHA-256, so a presented token is found with one
//! local lookup and its full hash compared in constant time. A revoked token
//! is a deleted record; each member refuses it once it has applied the delete.

pub mod audit;
pub mod limits;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use api::auth::{
    token_hash, token_id, valid_machine_id, CreateToken, CreatedToken, Role, TokenInfo,
};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::keyspace::{ErrorCode, Op, Precondition};
use crate::member::{Member, ServeError};
use policy::Subject;

/// The reserved key-space directory of authentication records (admins only).
pub const AUTH_DIR: &str = "/_auth";
/// Where token records live.
pub const TOKENS_DIR: &str = "/_auth/tokens";
/// The principal id of the members' own credential.
pub const MEMBER_ID: &str = "member";

/// What the key space keeps about a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Everything the API shows.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its role.
    pub role: Role,
    /// The machine of a node token.
    pub machine_id: Option<String>,
    /// The token id (`member` for the members' credential).
    pub id: String,
}

impl Principal {
    /// The caller as [`policy::authorize`] sees it; a node token without a machine gets reads only.
    pub fn subject(&self) -> Subject<'_> {
        match (self.role, self.machine_id.as_deref()) {
            (Role::Admin, _) => Subject::Admin,
            (Role::Operator, _) => Subject::Operator,
            (Role::Node, Some(m)) => Subject::Node(m),
            (Role::Viewer | Role::Node, _) => Subject::Viewer,
        }
    }
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// No token has this id.
    #[error("no token {0}")]
    NotFound(String),
    /// The write did not go through.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Authentication state of one member.
#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    member: Arc<Member>,
    /// SHA-256 of the members' credential.
    member_credential: [u8; 32],
    /// The audit log's background writer.
    audit: crate::engine::history::Recorder,
    /// Per-token request rate and open watches.
    limits: Arc<limits::Limits>,
}

/// The credential members send each other on the client port (dashboard
/// stats, payload replication): derived from the cluster token, which
/// already lets its holder write to the raft log on the peer port, and
/// granting only the viewer role.
pub fn member_credential(cluster_token: &str) -> String {
    let digest = Sha256::digest(format!("shoal-member-credential-v1\n{cluster_token}"));
    format!("shoal-member.{}", hex::encode(digest))
}

/// A fresh random token: `shoal_` and 64 hex digits (256 bits from the OS).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("shoal_{}", hex::encode(bytes))
}

fn record_key(id: &str) -> String {
    format!("{TOKENS_DIR}/{id}")
}

fn is_token_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Auth {
    /// The authentication of `member`; `enabled` false lets every request
    /// through (and applies no `limits`). Starts the audit log's writer, so it
    /// needs a Tokio runtime.
    pub fn new(
        member: Arc<Member>,
        enabled: bool,
        cluster_token: &str,
        limits: limits::LimitSettings,
    ) -> Self {
        Auth {
            enabled,
            limits: Arc::new(limits::Limits::new(limits)),
            audit: crate::engine::history::Recorder::start(member.clone(), audit::AUDIT_LOG),
            member,
            member_credential: Sha256::digest(member_credential(cluster_token)).into(),
        }
    }

    /// Queues an entry for the audit log (never waits; see [`audit`]).
    pub fn audit(&self, entry: api::fleet::ClusterEvent) {
        self.audit.record(entry);
    }

    /// True when requests need a token.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The per-token limits.
    pub fn limits(&self) -> &Arc<limits::Limits> {
        &self.limits
    }

    /// The member whose key space holds the records.
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// The caller a presented token stands for, if it is valid.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(presented.ct_eq(&self.member_credential)) {
            return Some(Principal {
                role: Role::Viewer,
                machine_id: None,
                id: MEMBER_ID.into(),
            });
        }
        let record = self.record(&token_id(token))?;
        let stored = hex::decode(&record.sha256).ok()?;
        if !bool::from(presented.as_slice().ct_eq(stored.as_slice())) {
            return None;
        }
        Some(Principal {
            role: record.info.role,
            machine_id: record.info.machine_id,
            id: record.info.id,
        })
    }

    fn record(&self, id: &str) -> Option<TokenRecord> {
        let entry = self.member.keys.read().lookup(&record_key(id)).ok()?;
        serde_json::from_str(entry.value.as_deref()?).ok()
    }

    /// Every token, by id.
    pub fn list(&self) -> Vec<TokenInfo> {
        let children = self.member.keys.read().children(TOKENS_DIR);
        children
            .into_iter()
            .filter_map(|(_, e)| serde_json::from_str::<TokenRecord>(e.value.as_deref()?).ok())
            .map(|r| r.info)
            .collect()
    }

    /// Creates a token for `req`; the secret is in the answer only.
    pub async fn create(&self, req: CreateToken) -> Result<CreatedToken, TokenError> {
        match (req.role, req.machine_id.as_deref()) {
            (Role::Node, Some(m)) if valid_machine_id(m) => {}
            (Role::Node, Some(m)) => {
                return Err(TokenError::BadRequest(format!(
                    "machine id {m:?} may hold only 1-128 of [A-Za-z0-9._-]"
                )))
            }
            (Role::Node, None) => {
                return Err(TokenError::BadRequest(
                    "a node token is bound to a machine: give machine_id".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(TokenError::BadRequest(format!(
                    "only node tokens are bound to a machine, not {}",
                    req.role
                )))
            }
            (_, None) => {}
        }
        if req.name.len() > 128 || req.name.chars().any(char::is_control) {
            return Err(TokenError::BadRequest(
                "the name must be at most 128 characters, without control characters".into(),
            ));
        }
        let token = new_secret();
        let info = self
            .store(&token, req.role, req.name, req.machine_id)
            .await?;
        Ok(CreatedToken { token, info })
    }

    /// Writes the record of `token` unless one exists (compare-and-swap).
    async fn store(
        &self,
        token: &str,
        role: Role,
        name: String,
        machine_id: Option<String>,
    ) -> Result<TokenInfo, TokenError> {
        let info = TokenInfo {
            id: token_id(token),
            name,
            role,
            machine_id,
            created: chrono::Utc::now(),
        };
        let record = TokenRecord {
            info: info.clone(),
            sha256: token_hash(token),
        };
        let value = serde_json::to_string(&record)
            .map_err(|e| TokenError::BadRequest(format!("encoding the record: {e}")))?;
        self.member
            .write(Op::Put {
                key: record_key(&info.id),
                value: Some(value),
                ttl: None,
                refresh: false,
                cond: Precondition {
                    prev_exist: Some(false),
                    ..Precondition::default()
                },
            })
            .await?;
        Ok(info)
    }

    /// Revokes a token by id; answers what it was.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo, TokenError> {
        let found = is_token_id(id).then(|| self.record(id)).flatten();
        let Some(record) = found else {
            return Err(TokenError::NotFound(id.to_owned()));
        };
        let deleted = self
            .member
            .write(Op::Delete {
                key: record_key(id),
                dir: false,
                recursive: false,
                cond: Precondition::default(),
            })
            .await;
        match deleted {
            Ok(_) => Ok(record.info),
            Err(ServeError::Key(e)) if e.code == ErrorCode::KeyNotFound => {
                Err(TokenError::NotFound(id.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// On a cluster's first start: creates the known admin token, or (on the
    /// first member of `--initial-cluster` only) a random one printed once on
    /// stdout. Retries until a leader takes the write, for about a minute.
    pub async fn bootstrap(self: Arc<Self>, known: Option<String>, generate: bool) {
        let (token, print) = match known {
            Some(t) => (t, false),
            None if generate => (new_secret(), true),
            None => return,
        };
        for _ in 0..600 {
            let stored = self
                .store(&token, Role::Admin, "bootstrap admin".into(), None)
                .await;
            match stored {
                Ok(info) => {
                    if print {
                        println!(
                            "shoal-server: created the first admin token {} \
                             (shown only now; keep it safe, create others with shoalctl token create)",
                            info.id
                        );
                        println!("admin token: {token}");
                    }
                    tracing::info!(id = %info.id, "bootstrap admin token created");
                    return;
                }
                Err(TokenError::Serve(ServeError::Key(e))) if e.code == ErrorCode::NodeExist => {
                    return
                }
                Err(e) => tracing::debug!(%e, "bootstrap admin token not written yet"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::error!("could not write the bootstrap admin token: no leader took it");
    }

    /// True when `machine` may delete the instance state at `key`: there is
    /// none (the delete will find nothing), or it is a state `machine` reported.
    pub fn may_delete_state(&self, key: &str, machine: &str) -> bool {
        let keys = self.member.keys.read();
        match keys.lookup(key) {
            Err(_) => true,
            Ok(entry) => entry
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<api::fleet::InstanceState>(v).ok())
                .is_some_and(|s| s.machine_id == machine),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_long() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), "shoal_".len() + 64);
        assert!(is_token_id(&token_id(&a)));
        assert!(!is_token_id("../x"));
    }

    #[test]
    fn member_credential_depends_on_the_cluster_token() {
        assert_eq!(member_credential("a"), member_credential("a"));
        assert_ne!(member_credential("a"), member_credential("b"));
    }

    #[test]
    fn records_keep_the_info_beside_the_hash() -> anyhow::Result<()> {
        let record = TokenRecord {
            info: TokenInfo {
                id: token_id("t"),
                name: "n".into(),
                role: Role::Node,
                machine_id: Some("m1".into()),
                created: chrono::Utc::now(),
            },
            sha256: token_hash("t"),
        };
        let json = serde_json::to_value(&record)?;
        assert_eq!(json["role"], "node");
        assert_eq!(json["machine_id"], "m1");
        assert_eq!(serde_json::from_value::<TokenRecord>(json)?, record);
        let principal = Principal {
            role: Role::Node,
            machine_id: None,
            id: "x".into(),
        };
        assert_eq!(principal.subject(), Subject::Viewer);
        Ok(())
    }
}
