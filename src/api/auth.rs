//! Who is calling: an API key or a JWT (HS256) in `Authorization: Bearer`, with a role checked
//! on every route. Secrets never appear in errors or logs.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::config::{ApiConfig, Role};
use super::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<name>` or `jwt:<sub>`: what the audit log records.
    pub name: String,
    pub role: Role,
}

/// The credentials, read once at start (from the environment or files).
pub struct Auth {
    keys: Vec<(String, Role, String)>,
    jwt: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    role: Role,
}

/// The password of a basic-auth credential (`base64(user:password)`).
fn basic_password(b64: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

/// Compares without stopping at the first difference (no timing hint of a key's prefix).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn from_config(cfg: &ApiConfig) -> Result<Auth, String> {
        let mut keys = Vec::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            let secret = k
                .key
                .read()
                .map_err(|e| format!("api.keys[{i}].key: {e}"))?;
            if secret.len() < 16 {
                return Err(format!("api.keys[{i}].key: at least 16 characters"));
            }
            keys.push((k.name.clone(), k.role, secret));
        }
        let jwt = match &cfg.jwt_hs256_secret {
            Some(s) => {
                let secret = s.read().map_err(|e| format!("api.jwt_hs256_secret: {e}"))?;
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                v.set_required_spec_claims(&["exp", "sub"]);
                v.leeway = 5;
                if let Some(iss) = &cfg.jwt_issuer {
                    v.set_issuer(&[iss]);
                }
                let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| format!("api.jwt_hs256_secret: {e}"))?;
                Some((key, v))
            }
            None => None,
        };
        Ok(Auth { keys, jwt })
    }

    /// The caller of a request, if its credentials hold and its role is at least `need`.
    pub fn check(&self, headers: &HeaderMap, need: Role) -> Result<Principal, ApiError> {
        self.check_as(headers, need, false)
    }

    /// [`Auth::check`] that also takes HTTP basic auth, the password being the API key or
    /// token (what `amtool` and Prometheus send when given a user and password).
    pub fn check_basic(&self, headers: &HeaderMap, need: Role) -> Result<Principal, ApiError> {
        self.check_as(headers, need, true)
    }

    fn check_as(
        &self,
        headers: &HeaderMap,
        need: Role,
        basic: bool,
    ) -> Result<Principal, ApiError> {
        let p = self.who(headers, basic)?;
        if p.role < need {
            return Err(ApiError::forbidden(format!(
                "{} has role {}; this needs {}",
                p.name,
                p.role.as_str(),
                need.as_str()
            )));
        }
        Ok(p)
    }

    fn who(&self, headers: &HeaderMap, basic: bool) -> Result<Principal, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "no credentials: send Authorization: Bearer <API key or token>",
                )
            })?
            .to_str()
            .map_err(|_| ApiError::unauthorized("unreadable Authorization header"))?;
        let password;
        let token = match value.strip_prefix("Bearer ") {
            Some(t) => t.trim(),
            None if basic && value.starts_with("Basic ") => {
                password = basic_password(&value[6..]).ok_or_else(|| {
                    ApiError::unauthorized("Authorization: Basic needs base64 of user:password")
                })?;
                password.as_str()
            }
            None if basic => {
                return Err(ApiError::unauthorized(
                    "Authorization must be Bearer <API key or token> or Basic",
                ))
            }
            None => {
                return Err(ApiError::unauthorized(
                    "Authorization must be Bearer <API key or token>",
                ))
            }
        };
        if let Some((name, role, _)) = self
            .keys
            .iter()
            .find(|(_, _, k)| same(k.as_bytes(), token.as_bytes()))
        {
            return Ok(Principal {
                name: format!("key:{name}"),
                role: *role,
            });
        }
        let Some((key, validation)) = &self.jwt else {
            return Err(ApiError::unauthorized("unknown API key"));
        };
        match jsonwebtoken::decode::<Claims>(token, key, validation) {
            Ok(t) => Ok(Principal {
                name: format!("jwt:{}", t.claims.sub),
                role: t.claims.role,
            }),
            Err(e) => Err(ApiError::unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "token signature invalid".to_string()
                }
                _ => format!("neither an API key nor a valid token ({e})"),
            })),
        }
    }
}
