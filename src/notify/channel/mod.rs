//! The channels: each turns a notification into its service's request, sends it, and says
//! whether it was delivered, or failed for now (retry) or for good (dead letter).

mod dingtalk;
mod email;
mod pagerduty;
mod slack;
mod telegram;
mod webhook;

use std::time::Duration;

use super::config::{ChannelConfig, NotifyConfig};
use super::template::{render, Flavour, Rendered, View};
use crate::model::{AlertStatus, Notification};

pub use dingtalk::sign as dingtalk_sign;
pub use webhook::payload as webhook_payload;
pub use webhook::signature as webhook_signature;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Worth retrying (timeouts, 5xx, 429, connection errors, rate limits).
    pub transient: bool,
    /// The service asked to wait this long (`Retry-After`, Telegram's `retry_after`).
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            transient: true,
            retry_after: None,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            transient: false,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// What the service answered on success (printed by `prismwatch notify test`).
pub type Attempt = Result<String, Failure>;

/// What channels share.
pub struct Ctx<'a> {
    pub http: &'a reqwest::Client,
    pub cfg: &'a NotifyConfig,
    /// Wall time of the attempt, ms since the epoch (DingTalk signs it).
    pub now_ms: i64,
}

impl Ctx<'_> {
    fn timeout(&self, ch: &ChannelConfig) -> Duration {
        ch.common()
            .timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(Duration::from_millis(self.cfg.timeout_ms))
    }

    fn language<'c>(&'c self, ch: &'c ChannelConfig) -> &'c str {
        ch.common()
            .language
            .as_deref()
            .unwrap_or(&self.cfg.language)
    }

    fn render(
        &self,
        ch: &ChannelConfig,
        n: &Notification,
        flavour: Flavour,
    ) -> Result<Rendered, Failure> {
        render(
            &View::of(n, &self.cfg.external_url),
            flavour,
            self.language(ch),
            &ch.common().templates,
        )
        .map_err(Failure::permanent)
    }
}

/// Whether this channel wants this notification (resolved-only ones may be skipped).
pub fn wants(ch: &ChannelConfig, n: &Notification) -> bool {
    ch.common().send_resolved.unwrap_or(true) || n.status == AlertStatus::Firing
}

/// One attempt at delivering `n` on `ch`.
pub async fn send(ch: &ChannelConfig, n: &Notification, ctx: &Ctx<'_>) -> Attempt {
    match ch {
        ChannelConfig::Webhook(c) => webhook::send(c, ch, n, ctx).await,
        ChannelConfig::Slack(c) => slack::send(c, ch, n, ctx).await,
        ChannelConfig::DingTalk(c) => dingtalk::send(c, ch, n, ctx).await,
        ChannelConfig::PagerDuty(c) => pagerduty::send(c, ch, n, ctx).await,
        ChannelConfig::Telegram(c) => telegram::send(c, ch, n, ctx).await,
        ChannelConfig::Email(c) => email::send(c, ch, n, ctx).await,
    }
}

/// An HTTP client for every channel: rustls with ring, no redirects (a DingTalk robot that is
/// throttled answers with a redirect: that is a failure to retry, not a page to follow).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("PrismWatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with rustls and ring")
}

/// Sends `req` and classifies the answer the common way: 2xx delivered; 429 (with
/// `Retry-After`), 5xx, 3xx, timeouts and connection errors transient; other 4xx permanent.
/// Returns the status and the body.
async fn http(req: reqwest::RequestBuilder) -> Result<(u16, String), Failure> {
    let resp = req.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        Failure::transient(format!("{what}: {}", error_chain(&e)))
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let short: String = body.chars().take(300).collect();
    match status {
        200..=299 => Ok((status, body)),
        429 => Err(Failure {
            transient: true,
            retry_after,
            message: format!("HTTP 429 (rate limited): {short}"),
        }),
        300..=399 | 500..=599 => Err(Failure {
            transient: true,
            retry_after,
            message: format!("HTTP {status}: {short}"),
        }),
        _ => Err(Failure::permanent(format!("HTTP {status}: {short}"))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// A copy of `n` listing at most `keep` alerts (the rest counted in `truncated`).
fn keep_alerts(n: &Notification, keep: usize) -> Notification {
    let mut m = n.clone();
    if m.alerts.len() > keep {
        m.truncated += m.alerts.len() - keep;
        m.alerts.truncate(keep);
    }
    m
}

/// Renders with fewer and fewer alerts until `fits` accepts the result (halving), so a message
/// over a service's size limit still goes out, with the count of what was left out.
fn shrink_to_fit<T>(
    n: &Notification,
    mut build: impl FnMut(&Notification) -> Result<T, Failure>,
    fits: impl Fn(&T) -> bool,
) -> Result<T, Failure> {
    let mut keep = n.alerts.len();
    loop {
        let m = keep_alerts(n, keep);
        let out = build(&m)?;
        if fits(&out) || keep == 0 {
            return Ok(out);
        }
        keep /= 2;
    }
}

#[cfg(test)]
mod tests;
