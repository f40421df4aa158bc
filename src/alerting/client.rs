//! Sending commands to the alert manager (the API, tests) and reading its state.
//!
//! A command is stored in `PRISM_COMMANDS` first (the audit log; the request id is its
//! `Nats-Msg-Id`, so a retried request is applied once), then the client waits for the active
//! manager's answer on an inbox named in the `Prism-Reply-To` header.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use futures::StreamExt;

use super::alert::ManagedAlert;
use super::command::{Command, CommandBody, Reply, HEADER_REPLY_TO};
use super::store::Store;
use super::ManagerError;
use crate::subjects;
use crate::tools::clock;

/// How long a client waits for the manager's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh request id: unique per request, reused by its retries.
pub fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Stores a result in the audit log (`prism.audit.<kind>` in `PRISM_COMMANDS`), deduplicated
/// by its request id; a failure is not retried (the command itself is stored already).
pub async fn store_result(js: &jetstream::Context, r: &Reply) {
    let body = serde_json::to_vec(r).expect("replies serialise");
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("result-{}", r.request_id).as_str());
    h.insert(subjects::HEADER_CONTENT_TYPE, "application/json");
    if let Ok(ack) = js
        .publish_with_headers(subjects::audit_subject(&r.kind), h, body.into())
        .await
    {
        let _ = ack.await;
    }
}

/// Stores `body` as a command from `principal` and waits for the manager's reply.
pub async fn send(
    js: &jetstream::Context,
    principal: &str,
    body: CommandBody,
    timeout: Duration,
) -> Result<Reply, ManagerError> {
    let cmd = Command {
        request_id: request_id(),
        principal: principal.to_string(),
        at: clock::now_ms(),
        body,
    };
    send_command(js, &cmd, timeout).await
}

/// [`send`] for a command built by the caller (its own request id).
pub async fn send_command(
    js: &jetstream::Context,
    cmd: &Command,
    timeout: Duration,
) -> Result<Reply, ManagerError> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ManagerError::Nats(format!("subscribe to the answer inbox: {e}")))?;
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", cmd.request_id.as_str());
    h.insert(HEADER_REPLY_TO, inbox.as_str());
    h.insert(subjects::HEADER_CONTENT_TYPE, "application/json");
    let body = serde_json::to_vec(cmd).expect("commands serialise");
    let ack = js
        .publish_with_headers(subjects::command_subject(cmd.body.kind()), h, body.into())
        .await
        .map_err(|e| ManagerError::Nats(format!("send the command: {e}")))?
        .await
        .map_err(|e| ManagerError::Nats(format!("store the command in PRISM_COMMANDS: {e}")))?;
    let answer = tokio::time::timeout(timeout, async {
        while let Some(m) = answers.next().await {
            if let Ok(r) = serde_json::from_slice::<Reply>(&m.payload) {
                if r.request_id == cmd.request_id {
                    return Some(r);
                }
            }
        }
        None
    })
    .await;
    match answer {
        Ok(Some(r)) => Ok(r),
        _ => Err(ManagerError::Nats(format!(
            "the command is stored (PRISM_COMMANDS sequence {}) but no active alert manager answered within {} s; it is applied when one runs",
            ack.sequence,
            timeout.as_secs()
        ))),
    }
}

/// The manager's stored alerts (every state), newest first.
pub async fn alerts(js: &jetstream::Context) -> Result<Vec<ManagedAlert>, ManagerError> {
    let mut a = Store::open(js).await?.load().await?.alerts;
    a.sort_by(|x, y| (y.starts_at, &y.id).cmp(&(x.starts_at, &x.id)));
    Ok(a)
}
