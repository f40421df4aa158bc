//! Message text from a notification, with minijinja: built-in templates in English and Chinese
//! per channel flavour, overridable per channel. HTML flavours (email's HTML part, Telegram)
//! escape every value; the others are plain text or markdown.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::model::{AlertStatus, Notification, NotificationKind};

/// Templates of one channel, overriding the built-in ones (minijinja syntax; the notification
/// is the context: `status`, `priority`, `alerts`, `common_labels`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    /// Title / subject line.
    #[serde(default)]
    pub title: Option<String>,
    /// Body: markdown for DingTalk and Slack, HTML for Telegram, plain text for email.
    #[serde(default)]
    pub body: Option<String>,
    /// Email only: the HTML part.
    #[serde(default)]
    pub html: Option<String>,
}

/// How a channel's text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Slack mrkdwn.
    Slack,
    /// DingTalk markdown.
    Markdown,
    /// Telegram's HTML subset (escaped values, `\n` for lines).
    TelegramHtml,
    /// Plain text (email text part, webhook-free channels' fallbacks).
    Text,
    /// Email HTML part.
    EmailHtml,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub title: String,
    pub body: String,
}

/// One alert as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub id: String,
    pub rule: String,
    pub priority: String,
    pub status: String,
    pub summary: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub starts_at: String,
    pub ends_at: String,
    pub acknowledged_by: String,
    pub flapping: bool,
    pub link: String,
}

/// What templates see.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub id: String,
    pub kind: String,
    pub receiver: String,
    pub status: String,
    pub priority: String,
    pub headline: String,
    pub firing: usize,
    pub resolved: usize,
    pub truncated: usize,
    pub alerts: Vec<AlertView>,
    pub common_labels: Vec<(String, String)>,
    pub group_key: String,
    pub storm_by_rule: Vec<(String, usize)>,
    pub storm_alerts: usize,
    pub created_at: String,
}

/// `2026-11-29 14:00:00 UTC`.
pub fn time_text(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn alert_link(external_url: &str, id: &str) -> String {
    if external_url.is_empty() {
        String::new()
    } else {
        format!("{}/alerts/{id}", external_url.trim_end_matches('/'))
    }
}

impl View {
    pub fn of(n: &Notification, external_url: &str) -> View {
        let alerts: Vec<AlertView> = n
            .alerts
            .iter()
            .map(|a| AlertView {
                id: a.id.clone(),
                rule: a.rule.clone(),
                priority: a.priority.to_string(),
                status: a.status.token().to_string(),
                summary: a
                    .annotations
                    .get("summary")
                    .cloned()
                    .unwrap_or_else(|| a.rule.clone()),
                labels: a
                    .labels
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "priority"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                value: a.value,
                starts_at: time_text(a.starts_at),
                ends_at: a.ends_at.map(time_text).unwrap_or_default(),
                acknowledged_by: a
                    .acknowledged
                    .as_ref()
                    .map(|k| k.by.clone())
                    .unwrap_or_default(),
                flapping: a.flapping,
                link: alert_link(external_url, &a.id),
            })
            .collect();
        let firing = n
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count();
        let headline = match n.kind {
            NotificationKind::Storm | NotificationKind::StormOver => "alert storm".to_string(),
            _ => n
                .common_labels
                .get("alertname")
                .cloned()
                .or_else(|| (alerts.len() == 1).then(|| alerts[0].rule.clone()))
                .unwrap_or_else(|| format!("{} alerts", alerts.len() + n.truncated)),
        };
        let (storm_by_rule, storm_alerts) = n
            .storm
            .as_ref()
            .map(|s| {
                (
                    s.by_rule.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    s.alerts,
                )
            })
            .unwrap_or_default();
        View {
            id: n.id.clone(),
            kind: serde_json::to_value(n.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            receiver: n.receiver.clone(),
            status: n.status.token().to_string(),
            priority: n.priority.to_string(),
            headline,
            firing,
            resolved: n.alerts.len() - firing,
            truncated: n.truncated,
            alerts,
            common_labels: n
                .common_labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "priority"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            group_key: n.group_key.clone(),
            storm_by_rule,
            storm_alerts,
            created_at: time_text(n.created_at),
        }
    }
}

const TITLE_EN: &str = "[{{ status|upper }}{% if firing %}:{{ firing }}{% endif %}] {{ priority }} {{ headline }}{% if kind == 'storm' %}: {{ storm_alerts }} alerts{% elif kind == 'storm_over' %} over{% elif kind == 'test' %} (test){% endif %}";
const TITLE_ZH: &str = "[{% if status == 'firing' %}告警{% else %}恢复{% endif %}{% if firing %}:{{ firing }}{% endif %}] {{ priority }} {{ headline }}{% if kind == 'storm' %}：{{ storm_alerts }} 条告警{% elif kind == 'storm_over' %} 已结束{% elif kind == 'test' %}（测试）{% endif %}";

/// One line per alert, then the storm counts and the truncation, in each flavour.
fn body(flavour: Flavour, zh: bool) -> String {
    let (b0, b1, nl) = match flavour {
        Flavour::Slack => ("*", "*", "\n"),
        Flavour::Markdown => ("**", "**", "\n\n"),
        Flavour::TelegramHtml => ("<b>", "</b>", "\n"),
        Flavour::Text => ("", "", "\n"),
        Flavour::EmailHtml => ("<b>", "</b>", "<br>\n"),
    };
    let (since, ended, acked, flapping, more, storm) = if zh {
        (
            "开始于",
            "结束于",
            "已确认",
            "抖动",
            "另有 {{ truncated }} 条告警未列出",
            "告警风暴：{{ storm_alerts }} 条告警",
        )
    } else {
        (
            "since",
            "ended",
            "acknowledged by",
            "flapping",
            "and {{ truncated }} more alerts",
            "Alert storm: {{ storm_alerts }} alerts",
        )
    };
    let link = match flavour {
        Flavour::Slack => "{% if a.link %} <{{ a.link }}|open>{% endif %}",
        Flavour::Markdown => "{% if a.link %} [open]({{ a.link }}){% endif %}",
        Flavour::TelegramHtml | Flavour::EmailHtml => {
            "{% if a.link %} <a href=\"{{ a.link }}\">open</a>{% endif %}"
        }
        Flavour::Text => "{% if a.link %} {{ a.link }}{% endif %}",
    };
    let bullet = if flavour == Flavour::Markdown {
        "- "
    } else {
        "• "
    };
    format!(
        "{{% if kind == 'storm' or kind == 'storm_over' %}}{b0}{storm}{b1}{nl}{{% for r in storm_by_rule %}}{bullet}{{{{ r[0] }}}}: {{{{ r[1] }}}}{nl}{{% endfor %}}{{% endif %}}\
{{% for a in alerts %}}{bullet}{b0}{{{{ a.status|upper }}}} {{{{ a.priority }}}} {{{{ a.rule }}}}{b1} {{{{ a.summary }}}}\
{{% if a.labels %}} ({{% for l in a.labels %}}{{{{ l[0] }}}}={{{{ l[1] }}}}{{% if not loop.last %}}, {{% endif %}}{{% endfor %}}){{% endif %}}\
, {since} {{{{ a.starts_at }}}}{{% if a.ends_at %}}, {ended} {{{{ a.ends_at }}}}{{% endif %}}\
{{% if a.acknowledged_by %}}, {acked} {{{{ a.acknowledged_by }}}}{{% endif %}}{{% if a.flapping %}}, {flapping}{{% endif %}}{link}{nl}{{% endfor %}}\
{{% if truncated %}}{more}{nl}{{% endif %}}"
    )
}

fn env(escape: bool) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(move |_| {
        if escape {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// Whether a template compiles.
pub fn check(text: &str) -> Result<(), String> {
    env(false)
        .template_from_str(text)
        .map(|_| ())
        .map_err(|e| format!("template error: {e}"))
}

fn render_one(text: &str, view: &View, escape: bool) -> Result<String, String> {
    let env = env(escape);
    let t = env
        .template_from_str(text)
        .map_err(|e| format!("template error: {e}"))?;
    t.render(view).map_err(|e| format!("template error: {e}"))
}

/// Title and body in `flavour` and language (`zh` or `en`), with overrides.
pub fn render(
    view: &View,
    flavour: Flavour,
    language: &str,
    overrides: &Templates,
) -> Result<Rendered, String> {
    let zh = language == "zh";
    let escape = matches!(flavour, Flavour::TelegramHtml | Flavour::EmailHtml);
    let title_t = overrides
        .title
        .clone()
        .unwrap_or_else(|| (if zh { TITLE_ZH } else { TITLE_EN }).to_string());
    let body_t = match flavour {
        Flavour::EmailHtml => overrides.html.clone(),
        _ => overrides.body.clone(),
    }
    .unwrap_or_else(|| body(flavour, zh));
    Ok(Rendered {
        // Titles are plain text everywhere (Telegram's is put in <b> by the channel, escaped).
        title: render_one(&title_t, view, false)?,
        body: render_one(&body_t, view, escape)?,
    })
}

/// Escapes text for Telegram's and email's HTML.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NotifiedAlert, Priority};

    fn notification() -> Notification {
        Notification {
            id: "team.abc.1".into(),
            kind: NotificationKind::Group,
            receiver: "team".into(),
            status: AlertStatus::Firing,
            priority: Priority::P1,
            group_key: "{}:{alertname=\"disk_full\"}".into(),
            group_labels: [("alertname".to_string(), "disk_full".to_string())].into(),
            common_labels: [("alertname".to_string(), "disk_full".to_string())].into(),
            common_annotations: Default::default(),
            alerts: vec![NotifiedAlert {
                id: "f00d-1".into(),
                fingerprint: "f00d".into(),
                rule: "disk_full".into(),
                priority: Priority::P1,
                status: AlertStatus::Firing,
                labels: [("service".to_string(), "<storage & co>".to_string())].into(),
                annotations: [("summary".to_string(), "Disk 95% on storage".to_string())].into(),
                value: 95.0,
                starts_at: 1_764_000_000_000,
                ends_at: None,
                acknowledged: None,
                flapping: false,
                generator_url: String::new(),
            }],
            truncated: 2,
            storm: None,
            created_at: 1_764_000_060_000,
            sequence: 1,
        }
    }

    #[test]
    fn defaults_render_in_both_languages_and_escape_html() {
        let v = View::of(&notification(), "https://pw.example/");
        let en = render(&v, Flavour::Text, "en", &Templates::default()).unwrap();
        assert_eq!(en.title, "[FIRING:1] P1 disk_full");
        assert!(en.body.contains("FIRING P1 disk_full Disk 95% on storage (service=<storage & co>), since 2025-11-24 16:00:00 UTC https://pw.example/alerts/f00d-1"), "{}", en.body);
        assert!(en.body.contains("and 2 more alerts"));
        let zh = render(&v, Flavour::Markdown, "zh", &Templates::default()).unwrap();
        assert_eq!(zh.title, "[告警:1] P1 disk_full");
        assert!(zh.body.contains("开始于"), "{}", zh.body);
        assert!(zh.body.contains("另有 2 条告警未列出"));
        let tg = render(&v, Flavour::TelegramHtml, "en", &Templates::default()).unwrap();
        assert!(
            tg.body.contains("service=&lt;storage &amp; co&gt;"),
            "{}",
            tg.body
        );
        assert!(tg.body.contains("<b>FIRING P1 disk_full</b>"));
    }

    #[test]
    fn overrides_replace_the_defaults_and_bad_ones_are_reported() {
        let v = View::of(&notification(), "");
        let t = Templates {
            title: Some("{{ receiver }}: {{ alerts|length }} / {{ priority }}".into()),
            body: None,
            html: None,
        };
        assert_eq!(
            render(&v, Flavour::Slack, "en", &t).unwrap().title,
            "team: 1 / P1"
        );
        assert!(check("{{ unclosed").is_err());
        let bad = Templates {
            title: Some("{{ nonexistent.field }}".into()),
            ..Default::default()
        };
        assert!(render(&v, Flavour::Slack, "en", &bad).is_err());
    }
}
