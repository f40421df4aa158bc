//! `api:` settings: who may call the HTTP API and with which role.

use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;
use crate::config::yaml::Problems;

/// What a caller may do: viewers read, operators also ack, silence and resolve, admins also
/// reload.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An API key for a machine: `Authorization: Bearer <key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who it is (the audit log's principal: `key:<name>`).
    pub name: String,
    pub role: Role,
    pub key: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// API keys (none by default: every API route answers 401 until one is configured).
    pub keys: Vec<ApiKey>,
    /// JWT bearer tokens signed with HS256 by this secret; the claims `sub` (who) and `role`
    /// (viewer, operator, admin) are required, `exp` is checked.
    pub jwt_hs256_secret: Option<Secret>,
    /// JWT bearer tokens signed RS256 or ES256 by a key of this JWKS file (public keys; the
    /// token's `kid` picks one). Read again when the file changes.
    pub jwt_jwks_file: Option<std::path::PathBuf>,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a command waits for the alert manager's answer, in ms.
    pub command_timeout_ms: u64,
    /// Requests a second each client (a principal, or an address without valid credentials)
    /// may make; 0 turns limiting off.
    pub rate_limit_per_second: u32,
    /// Requests a client may make at once before the rate applies.
    pub rate_limit_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            jwt_hs256_secret: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            max_body_bytes: 1 << 20,
            command_timeout_ms: 10_000,
            rate_limit_per_second: 50,
            rate_limit_burst: 200,
        }
    }
}

impl ApiConfig {
    /// Whether any caller can authenticate (else every API route answers 401).
    pub fn has_credentials(&self) -> bool {
        !self.keys.is_empty() || self.jwt_hs256_secret.is_some() || self.jwt_jwks_file.is_some()
    }

    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.check(self.max_body_bytes > 0, "max_body_bytes", "must be > 0");
        p.check(
            self.command_timeout_ms > 0,
            "command_timeout_ms",
            "must be > 0",
        );
        for (i, k) in self.keys.iter().enumerate() {
            p.check(
                !k.name.is_empty(),
                &format!("keys[{i}].name"),
                "must not be empty",
            );
        }
        p.into_vec()
    }
}
