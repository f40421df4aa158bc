//! API keys managed through the API (admin): `POST /api/v1/keys` makes a key for a machine and
//! shows it once; only its SHA-256 is stored, in the KV bucket `PRISM_API_KEYS`, which every
//! API process follows, so a key works everywhere within moments and a deleted one stops
//! everywhere. Keys from the config file are listed too (never their secret) and cannot be
//! deleted here. Creations and deletions go to the audit log.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::auth::{digest, Auth, StoredKey};
use super::error::{ApiError, JsonBody};
use super::{ApiState, Role};
use crate::subjects;
use crate::tools::clock;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/keys", get(list).post(create))
        .route("/api/v1/keys/{name}", delete(remove))
}

async fn bucket(js: &jetstream::Context) -> Result<kv::Store, String> {
    match js.get_key_value(subjects::API_KEYS_BUCKET).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: subjects::API_KEYS_BUCKET.to_string(),
                description: "PrismWatch API keys made through the API (SHA-256 only)".into(),
                history: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create {}: {e}", subjects::API_KEYS_BUCKET)),
    }
}

/// Keeps `auth`'s API-made keys equal to the bucket until `stop` (watching again after errors).
pub fn follow(js: jetstream::Context, auth: Arc<Auth>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let watch = async {
                let store = bucket(&js).await?;
                let mut w = store
                    .watch_with_history(">")
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(e) = w.next().await {
                    let e = e.map_err(|e| e.to_string())?;
                    match e.operation {
                        kv::Operation::Put => {
                            if let Ok(k) = serde_json::from_slice::<StoredKey>(&e.value) {
                                auth.put_stored_key(k);
                            }
                        }
                        _ => auth.remove_stored_key(&e.key),
                    }
                }
                Ok::<(), String>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                r = watch => if let Err(e) = r {
                    tracing::debug!(error = %e, "API key watch ended; watching again");
                },
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    summary = "API keys: from the config file and made through the API (never their secret; admin)",
    responses((status = 200, description = "The keys", body = serde_json::Value))
)]
async fn list(State(s): State<ApiState>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.auth.check(&h, Role::Admin)?;
    let mut keys: Vec<Value> = s
        .auth
        .config_keys()
        .into_iter()
        .map(|(name, role)| json!({"name": name, "role": role, "source": "config"}))
        .collect();
    for k in s.auth.stored_keys() {
        keys.push(json!({
            "name": k.name, "role": k.role, "source": "api",
            "created_by": k.created_by, "created_at": k.created_at,
        }));
    }
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKey {
    /// Who the key is for (`key:<name>` in the audit log): letters, digits, `-`, `_`.
    name: String,
    role: Role,
}

#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    summary = "Make an API key for a machine (admin): the answer is the only time the key is shown",
    request_body = NewKey,
    responses((status = 200, description = "The new key", body = serde_json::Value))
)]
async fn create(
    State(s): State<ApiState>,
    h: HeaderMap,
    JsonBody(b): JsonBody<NewKey>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Admin)?;
    if !subjects::is_token(&b.name) || b.name.len() > 64 {
        return Err(ApiError::bad_request(
            "name: 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if s.auth.config_keys().iter().any(|(n, _)| *n == b.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "refused",
            format!("key {:?} is defined in the config file", b.name),
        ));
    }
    let (js, _, _) = s.nats()?;
    let store = bucket(js).await.map_err(ApiError::unavailable)?;
    let secret = format!("pwk_{}", crate::alerting::client::request_id());
    let stored = StoredKey {
        name: b.name.clone(),
        role: b.role,
        sha256: digest(&secret),
        created_by: who.name.clone(),
        created_at: clock::now_ms(),
    };
    let body = serde_json::to_vec(&stored).expect("serialises");
    // Created only if absent: two admins cannot both make the same name.
    store.create(&b.name, body.into()).await.map_err(|e| {
        if e.kind() == kv::CreateErrorKind::AlreadyExists {
            ApiError::new(
                StatusCode::CONFLICT,
                "refused",
                format!("key {:?} exists: delete it first to replace it", b.name),
            )
        } else {
            ApiError::unavailable(format!("store the key: {e}"))
        }
    })?;
    // Usable at once by this process (the others follow the bucket).
    s.auth.put_stored_key(stored);
    super::audit::record(
        js,
        &who.name,
        "key.create",
        true,
        format!("key {} made with role {}", b.name, b.role.as_str()),
        json!({"name": b.name, "role": b.role}),
    )
    .await;
    Ok(Json(json!({
        "name": b.name,
        "role": b.role,
        "key": secret,
        "message": "keep the key now: it is not shown again",
    })))
}

#[utoipa::path(
    delete,
    path = "/api/v1/keys/{name}",
    tag = "keys",
    summary = "Delete an API key made through the API (admin): it stops working everywhere",
    params(("name" = String, Path, description = "Key name")),
    responses((status = 200, description = "Deleted", body = serde_json::Value))
)]
async fn remove(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = s.auth.check(&h, Role::Admin)?;
    if s.auth.config_keys().iter().any(|(n, _)| *n == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "refused",
            format!("key {name:?} is defined in the config file: remove it there"),
        ));
    }
    if !s.auth.stored_keys().iter().any(|k| k.name == name) {
        return Err(ApiError::not_found(format!("no key {name:?}")));
    }
    let (js, _, _) = s.nats()?;
    let store = bucket(js).await.map_err(ApiError::unavailable)?;
    store
        .purge(&name)
        .await
        .map_err(|e| ApiError::unavailable(format!("delete the key: {e}")))?;
    s.auth.remove_stored_key(&name);
    super::audit::record(
        js,
        &who.name,
        "key.delete",
        true,
        format!("key {name} deleted"),
        json!({"name": name}),
    )
    .await;
    Ok(Json(json!({"message": format!("key {name} deleted")})))
}
