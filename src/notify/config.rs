//! Notifier settings (`notify:` in the main config) and the receivers' channels (in the routing
//! file, `receivers[].<channel>_configs`, Alertmanager's layout). Secrets come only from the
//! environment or files: a config file holds `{env: NAME}` or `{file: path}`, never the secret.

use crate::config::yaml::Problems;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::template::Templates;
pub use crate::config::secret::Secret;

/// `notify:` in `config/prismwatch.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The durable consumer every notifier worker shares (one queue: each notification goes to
    /// one worker).
    pub consumer_name: String,
    /// Deliveries in flight per process.
    pub concurrency: usize,
    /// A notification not acked for this long is delivered again (to another worker if this one
    /// died): the at-least-once window. In-progress deliveries extend it while they work.
    pub ack_wait_secs: u64,
    /// Transient errors are retried with exponential backoff and full jitter, from
    /// `retry_initial_ms` doubling up to `retry_max_ms`, until `retry_deadline_secs` after the
    /// first attempt; then the notification is dead-lettered.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub retry_deadline_secs: u64,
    /// Per-request timeout of every channel (a channel's `timeout` overrides it).
    pub timeout_ms: u64,
    /// Default language of the built-in templates: `en` or `zh`.
    pub language: String,
    /// Link target for "open the alert": `<external_url>/alerts/<id>` (empty: no link).
    pub external_url: String,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            consumer_name: crate::subjects::NOTIFY_CONSUMER.into(),
            concurrency: 32,
            ack_wait_secs: 30,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            retry_deadline_secs: 600,
            timeout_ms: 10_000,
            language: "en".into(),
            external_url: String::new(),
        }
    }
}

impl NotifyConfig {
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        p.check(
            crate::subjects::is_token(&self.consumer_name),
            "consumer_name",
            "must match [A-Za-z0-9_-]+",
        );
        p.check(self.concurrency > 0, "concurrency", "must be > 0");
        p.check(self.ack_wait_secs >= 3, "ack_wait_secs", "must be >= 3");
        p.check(self.retry_initial_ms > 0, "retry_initial_ms", "must be > 0");
        p.check(
            self.retry_max_ms >= self.retry_initial_ms,
            "retry_max_ms",
            "must be >= retry_initial_ms",
        );
        p.check(self.timeout_ms > 0, "timeout_ms", "must be > 0");
        p.check(
            matches!(self.language.as_str(), "en" | "zh"),
            "language",
            "must be en or zh",
        );
        p.into_vec()
    }
}

/// At most `messages` sends per `per` (e.g. `1s`, `1m`) for this channel, across every worker;
/// what comes on top is merged into the next message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub messages: u32,
    pub per: String,
}

/// What every channel has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// `en` or `zh`; default `notify.language`.
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub templates: Templates,
    /// Send resolved notifications (default true).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Request timeout (e.g. `5s`); default `notify.timeout_ms`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Default per channel: Slack 1 per second, DingTalk 20 per minute, Telegram 20 per
    /// minute, PagerDuty 120 per minute; none for email and webhooks.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipients (several allowed).
    pub to: Vec<String>,
    /// `PrismWatch <alerts@example.com>`.
    pub from: String,
    /// `host:port`.
    pub smarthost: String,
    /// `starttls` (default; port 587), `tls` (implicit TLS, port 465) or `plain` (no TLS: only
    /// for a relay on a trusted network).
    #[serde(default = "starttls")]
    pub security: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// A PEM file of extra CA certificates to trust (a private mail server's CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(flatten)]
    pub common: Common,
}

fn starttls() -> String {
    "starttls".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (it is the credential).
    pub url: Secret,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkConfig {
    /// `https://oapi.dingtalk.com/robot/send?access_token=...` (the token is the credential).
    pub url: Secret,
    /// The robot's signing secret (`SEC...`), when signing is on.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `markdown` (default) or `action_card`.
    #[serde(default = "markdown")]
    pub message_type: String,
    /// Mobiles `@`-mentioned on P1 notifications.
    #[serde(default)]
    pub at_mobiles: Vec<String>,
    #[serde(flatten)]
    pub common: Common,
}

fn markdown() -> String {
    "markdown".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Secret,
    /// Signs the body: header `X-PrismWatch-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// Extra headers (values are not secrets; use `hmac_secret` or the URL for those).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Most alerts per message (0: all); the rest are counted in `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The Events API v2 integration (routing) key.
    pub routing_key: Secret,
    /// Default `https://events.pagerduty.com/v2/enqueue`.
    #[serde(default = "pagerduty_url")]
    pub url: String,
    #[serde(flatten)]
    pub common: Common,
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    pub bot_token: Secret,
    /// A chat id (`-100...` for supergroups) or `@channel`.
    pub chat_id: String,
    /// Default `https://api.telegram.org`.
    #[serde(default = "telegram_url")]
    pub api_url: String,
    #[serde(flatten)]
    pub common: Common,
}

fn telegram_url() -> String {
    "https://api.telegram.org".into()
}

/// A receiver's channels, as written in the routing file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverDef {
    pub name: String,
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    #[serde(default)]
    pub dingtalk_configs: Vec<DingTalkConfig>,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub pagerduty_configs: Vec<PagerDutyConfig>,
    #[serde(default)]
    pub telegram_configs: Vec<TelegramConfig>,
}

/// One configured channel of a receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelConfig {
    Email(EmailConfig),
    Slack(SlackConfig),
    DingTalk(DingTalkConfig),
    Webhook(WebhookConfig),
    PagerDuty(PagerDutyConfig),
    Telegram(TelegramConfig),
}

impl ChannelConfig {
    /// `email`, `slack`, ...: the metric label and the key prefix in the routing file.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::DingTalk(_) => "dingtalk",
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::PagerDuty(_) => "pagerduty",
            ChannelConfig::Telegram(_) => "telegram",
        }
    }

    pub fn common(&self) -> &Common {
        match self {
            ChannelConfig::Email(c) => &c.common,
            ChannelConfig::Slack(c) => &c.common,
            ChannelConfig::DingTalk(c) => &c.common,
            ChannelConfig::Webhook(c) => &c.common,
            ChannelConfig::PagerDuty(c) => &c.common,
            ChannelConfig::Telegram(c) => &c.common,
        }
    }

    /// The channel's rate limit: its own, else the service's documented one.
    pub fn rate_limit(&self) -> Option<(u32, u64)> {
        if let Some(r) = &self.common().rate_limit {
            let per = humantime::parse_duration(&r.per)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1_000);
            return Some((r.messages, per.max(1)));
        }
        match self {
            ChannelConfig::Slack(_) => Some((1, 1_000)),
            ChannelConfig::DingTalk(_) | ChannelConfig::Telegram(_) => Some((20, 60_000)),
            ChannelConfig::PagerDuty(_) => Some((120, 60_000)),
            ChannelConfig::Email(_) | ChannelConfig::Webhook(_) => None,
        }
    }
}

impl ReceiverDef {
    /// Every channel, in a fixed order (their index names them: `<receiver>.<kind>.<i>`).
    pub fn channels(&self) -> Vec<ChannelConfig> {
        let mut out = Vec::new();
        out.extend(self.email_configs.iter().cloned().map(ChannelConfig::Email));
        out.extend(self.slack_configs.iter().cloned().map(ChannelConfig::Slack));
        out.extend(
            self.dingtalk_configs
                .iter()
                .cloned()
                .map(ChannelConfig::DingTalk),
        );
        out.extend(
            self.webhook_configs
                .iter()
                .cloned()
                .map(ChannelConfig::Webhook),
        );
        out.extend(
            self.pagerduty_configs
                .iter()
                .cloned()
                .map(ChannelConfig::PagerDuty),
        );
        out.extend(
            self.telegram_configs
                .iter()
                .cloned()
                .map(ChannelConfig::Telegram),
        );
        out
    }

    /// What is wrong with the channels, as (key below the receiver, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in self.channels() {
            let i = counts.entry(c.kind()).or_default();
            let key = format!("{}_configs[{i}]", c.kind());
            *i += 1;
            let common = c.common();
            if let Some(l) = &common.language {
                if !matches!(l.as_str(), "en" | "zh") {
                    out.push((format!("{key}.language"), "must be en or zh".into()));
                }
            }
            if let Some(t) = &common.timeout {
                if humantime::parse_duration(t).is_err() {
                    out.push((
                        format!("{key}.timeout"),
                        format!("{t:?} is not a duration like 5s"),
                    ));
                }
            }
            if let Some(r) = &common.rate_limit {
                if r.messages == 0 || humantime::parse_duration(&r.per).is_err() {
                    out.push((
                        format!("{key}.rate_limit"),
                        "needs messages > 0 and per: a duration like 1m".into(),
                    ));
                }
            }
            for (name, text) in [
                ("title", &common.templates.title),
                ("body", &common.templates.body),
                ("html", &common.templates.html),
            ] {
                if let Some(text) = text {
                    if let Err(e) = super::template::check(text) {
                        out.push((format!("{key}.templates.{name}"), e));
                    }
                }
            }
            match &c {
                ChannelConfig::Email(e) => {
                    if e.to.is_empty() {
                        out.push((format!("{key}.to"), "needs at least one recipient".into()));
                    }
                    if !matches!(e.security.as_str(), "starttls" | "tls" | "plain") {
                        out.push((
                            format!("{key}.security"),
                            "must be starttls, tls or plain".into(),
                        ));
                    }
                    if e.smarthost.rsplit_once(':').is_none() {
                        out.push((format!("{key}.smarthost"), "must be host:port".into()));
                    }
                }
                ChannelConfig::DingTalk(d)
                    if !matches!(d.message_type.as_str(), "markdown" | "action_card") =>
                {
                    out.push((
                        format!("{key}.message_type"),
                        "must be markdown or action_card".into(),
                    ));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::alerting::config::Routing;

    #[test]
    fn the_shipped_routing_file_and_its_channel_examples_are_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/routing.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let shipped = Routing::parse(path, &text).unwrap();
        assert!(shipped.receivers.iter().all(|r| r.channels().is_empty()));
        // Every commented example of the receivers, uncommented.
        let (head, tail) = text.split_at(text.find("\nreceivers:").unwrap());
        let examples: String = head.to_string()
            + &tail
                .lines()
                .map(|l| {
                    l.strip_prefix("    # ")
                        .map_or(l.to_string(), |r| format!("    {r}"))
                })
                .collect::<Vec<_>>()
                .join("\n");
        let r = Routing::parse(path, &examples).unwrap();
        let kinds: Vec<&str> = r
            .receivers
            .iter()
            .flat_map(|r| r.channels())
            .map(|c| c.kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "email",
                "pagerduty",
                "slack",
                "webhook",
                "dingtalk",
                "telegram"
            ]
        );
    }

    #[test]
    fn bad_channels_are_refused_naming_the_key() {
        let text = "route: {receiver: a}\nreceivers:\n  - name: a\n    slack_configs:\n      - url: {env: X}\n        rate_limit: {messages: 0, per: 1s}\n";
        let e = Routing::parse("r.yaml", text).unwrap_err().to_string();
        assert!(
            e.contains("receivers[0].slack_configs[0].rate_limit"),
            "{e}"
        );
        let text = "route: {receiver: a}\nreceivers:\n  - name: a\n    slack_configs:\n      - url: https://hooks.slack.com/x\n";
        let e = Routing::parse("r.yaml", text).unwrap_err().to_string();
        assert!(e.contains("r.yaml") && e.contains("url"), "{e}");
        let text = "route: {receiver: a}\nreceivers:\n  - name: a\n    email_configs:\n      - {to: [a@b.c], from: x@y.z, smarthost: nohost}\n";
        let e = Routing::parse("r.yaml", text).unwrap_err().to_string();
        assert!(e.contains("email_configs[0].smarthost"), "{e}");
    }
}
