//! `/api/v1/elections`: leader election on a TTL-backed single slot.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/elections/{name}/campaign` body. Campaigning again as the
/// current leader renews the term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignRequest {
    /// The candidate's identity.
    pub candidate: String,
    /// What the leader proclaims (an address, say).
    #[serde(default)]
    pub value: String,
    /// Seconds leadership lasts unless renewed.
    pub ttl: u64,
    /// Seconds to wait to become leader; 0 answers at once.
    #[serde(default)]
    pub wait: u64,
}

/// `POST /api/v1/elections/{name}/resign` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResignRequest {
    /// The candidate stepping down.
    pub candidate: String,
}

/// Who leads an election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Leader {
    /// Election name.
    pub name: String,
    /// The current leader.
    pub leader: String,
    /// What the leader proclaims.
    pub value: String,
    /// Fencing token of this term.
    pub token: u64,
}
