//! Who is calling: an API key or a JWT in `Authorization: Bearer` (HS256 from a secret; RS256
//! or ES256 from the public keys of a JWKS file, picked by the token's `kid`), with a role
//! checked on every route. Secrets never appear in errors or logs.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::config::{ApiConfig, Role};
use super::error::ApiError;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<name>` or `jwt:<sub>`: what the audit log records.
    pub name: String,
    pub role: Role,
}

/// The credentials, read at start (from the environment or files); the JWKS file is read
/// again when it changes ([`Auth::refresh`]).
pub struct Auth {
    keys: Vec<(String, Role, String)>,
    /// Keys made through the API (`PRISM_API_KEYS`), by name: only their SHA-256.
    stored: RwLock<std::collections::BTreeMap<String, StoredKey>>,
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
}

/// Public keys for RS256 / ES256 tokens, from a JWKS file.
struct Jwks {
    file: PathBuf,
    keys: RwLock<(Option<SystemTime>, Vec<JwksKey>)>,
}

struct JwksKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

fn modified(file: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// The RS256 and ES256 keys of a JWKS file (others are refused: say which).
fn read_jwks(file: &PathBuf) -> Result<Vec<JwksKey>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JWKS document: {e}", file.display()))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(p))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => {
                return Err(format!(
                    "{}: keys[{i}] is neither an RS256 (RSA) nor an ES256 (EC P-256) key",
                    file.display()
                ))
            }
        };
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("{}: keys[{i}]: {e}", file.display()))?;
        keys.push(JwksKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!("{} holds no key", file.display()));
    }
    Ok(keys)
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    role: Role,
}

/// An API key made through the API, as stored in `PRISM_API_KEYS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_by: String,
    pub created_at: i64,
}

/// The SHA-256 of a key, hex.
pub fn digest(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
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
        let hs256 = match &cfg.jwt_hs256_secret {
            Some(s) => {
                let secret = s.read().map_err(|e| format!("api.jwt_hs256_secret: {e}"))?;
                Some(
                    DecodingKey::from_secret(secret.as_bytes())
                        .map_err(|e| format!("api.jwt_hs256_secret: {e}"))?,
                )
            }
            None => None,
        };
        let jwks = match &cfg.jwt_jwks_file {
            Some(file) => {
                let keys = read_jwks(file).map_err(|e| format!("api.jwt_jwks_file: {e}"))?;
                Some(Jwks {
                    file: file.clone(),
                    keys: RwLock::new((modified(file), keys)),
                })
            }
            None => None,
        };
        Ok(Auth {
            keys,
            stored: RwLock::default(),
            hs256,
            jwks,
            issuer: cfg.jwt_issuer.clone(),
        })
    }

    /// The config file's keys: name and role.
    pub fn config_keys(&self) -> Vec<(String, Role)> {
        self.keys.iter().map(|(n, r, _)| (n.clone(), *r)).collect()
    }

    /// The keys made through the API.
    pub fn stored_keys(&self) -> Vec<StoredKey> {
        self.stored
            .read()
            .expect("keys lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn put_stored_key(&self, k: StoredKey) {
        self.stored
            .write()
            .expect("keys lock")
            .insert(k.name.clone(), k);
    }

    pub fn remove_stored_key(&self, name: &str) {
        self.stored.write().expect("keys lock").remove(name);
    }

    /// Reads the JWKS file again if it changed: `Some(message)` when it did (the keys are
    /// replaced only when the new file is valid).
    pub fn refresh(&self) -> Option<Result<String, String>> {
        let jwks = self.jwks.as_ref()?;
        let now = modified(&jwks.file);
        if now == jwks.keys.read().expect("jwks lock").0 {
            return None;
        }
        Some(match read_jwks(&jwks.file) {
            Ok(keys) => {
                let n = keys.len();
                *jwks.keys.write().expect("jwks lock") = (now, keys);
                Ok(format!("{} reloaded: {n} key(s)", jwks.file.display()))
            }
            Err(e) => {
                // Not again until it changes once more.
                jwks.keys.write().expect("jwks lock").0 = now;
                Err(e)
            }
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_required_spec_claims(&["exp", "sub"]);
        v.leeway = 5;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        v
    }

    /// The claims of a token, checked with the key its header names.
    fn decode_jwt(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthorized("neither an API key nor a valid token"))?;
        let refused = |e: jsonwebtoken::errors::Error| {
            ApiError::unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "token signature invalid".to_string()
                }
                _ => format!("invalid token ({e})"),
            })
        };
        match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or_else(|| {
                    ApiError::unauthorized(
                        "HS256 tokens are not accepted here (no api.jwt_hs256_secret)",
                    )
                })?;
                jsonwebtoken::decode::<Claims>(token, key, &self.validation(Algorithm::HS256))
                    .map(|t| t.claims)
                    .map_err(refused)
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    ApiError::unauthorized(format!(
                        "{alg:?} tokens are not accepted here (no api.jwt_jwks_file)"
                    ))
                })?;
                let keys = jwks.keys.read().expect("jwks lock");
                let candidates: Vec<&JwksKey> = keys
                    .1
                    .iter()
                    .filter(|k| k.alg == alg)
                    .filter(|k| header.kid.is_none() || k.kid == header.kid)
                    .collect();
                let key = match (candidates.as_slice(), &header.kid) {
                    ([k], _) => k,
                    ([], Some(kid)) => {
                        return Err(ApiError::unauthorized(format!(
                            "no {alg:?} key with kid {kid:?} in the JWKS"
                        )))
                    }
                    ([], None) => {
                        return Err(ApiError::unauthorized(format!(
                            "no {alg:?} key in the JWKS"
                        )))
                    }
                    _ => {
                        return Err(ApiError::unauthorized(
                            "the token names no kid and the JWKS holds several keys",
                        ))
                    }
                };
                jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(alg))
                    .map(|t| t.claims)
                    .map_err(refused)
            }
            other => Err(ApiError::unauthorized(format!(
                "tokens signed {other:?} are not accepted (HS256, RS256, ES256)"
            ))),
        }
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

    /// The caller the request's credentials name (bearer or basic), if they hold.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Principal> {
        self.who(headers, true).ok()
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
        // Keys made through the API: compared by their SHA-256 (the secret is not stored).
        let stored = self.stored.read().expect("keys lock");
        if !stored.is_empty() {
            let d = digest(token);
            if let Some(k) = stored
                .values()
                .find(|k| same(k.sha256.as_bytes(), d.as_bytes()))
            {
                return Ok(Principal {
                    name: format!("key:{}", k.name),
                    role: k.role,
                });
            }
        }
        drop(stored);
        // A JWT has three dot-separated parts; anything else was meant as a key.
        if self.hs256.is_none() && self.jwks.is_none() || token.split('.').count() != 3 {
            return Err(ApiError::unauthorized("unknown API key"));
        }
        let claims = self.decode_jwt(token)?;
        Ok(Principal {
            name: format!("jwt:{}", claims.sub),
            role: claims.role,
        })
    }
}
