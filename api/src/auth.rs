//! Tokens and roles: the wire types of `/api/v1/tokens` (admin only).
//!
//! A token is a bearer secret; the server keeps only its SHA-256. Its id is
//! the first 16 hex digits of that hash, so the server finds a presented
//! token's record without storing the secret and `shoalctl token revoke ID`
//! names a token without showing it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens and members.
    Admin,
    /// Units, updates, locks, elections and keys; not tokens or members.
    Operator,
    /// Reads only (never the token records).
    Viewer,
    /// An agent: its own machine record, states, lock slots and check-ins; reads.
    Node,
}

impl Role {
    /// The role's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Node => "node",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            "node" => Ok(Role::Node),
            other => Err(format!(
                "unknown role {other:?} (admin, operator, viewer or node)"
            )),
        }
    }
}

/// A token as the API shows it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    /// The first 16 hex digits of the token's SHA-256.
    pub id: String,
    /// A name for people (`ci`, `alice`, the machine id...).
    #[serde(default)]
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The machine a `node` token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateToken {
    /// What it may do.
    pub role: Role,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// Required for `node` tokens, refused for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

/// The answer to a create: the secret, shown this once, and its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// The bearer secret.
    pub token: String,
    /// What the server keeps about it.
    pub info: TokenInfo,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    /// Every token, by id.
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/audit`: writes on the client port, newest first (admins only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLog {
    /// Entries of kind `audit`: who, method, path and status in `detail`.
    pub entries: Vec<crate::fleet::ClusterEvent>,
}

/// The hex SHA-256 of a token: what the server stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A token's id: the first 16 hex digits of its hash.
pub fn token_id(token: &str) -> String {
    let mut hash = token_hash(token);
    hash.truncate(16);
    hash
}

/// True for a machine id a node token may be bound to (as the agent accepts them).
pub fn valid_machine_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_by_name() {
        for role in [Role::Admin, Role::Operator, Role::Viewer, Role::Node] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).ok(),
                Some(format!("\"{role}\""))
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn id_is_a_prefix_of_the_hash() {
        let hash = token_hash("s3cret");
        assert_eq!(hash.len(), 64);
        assert_eq!(token_id("s3cret"), hash[..16]);
        assert_ne!(token_id("s3cret"), token_id("s3cret2"));
    }
}
