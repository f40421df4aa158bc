//! Email with lettre: SMTP with STARTTLS, implicit TLS or plain, optional auth, a text and an
//! HTML part, several recipients; a notification's alerts in one mail.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Attempt, Ctx, Failure};
use crate::model::Notification;
use crate::notify::config::{ChannelConfig, EmailConfig};
use crate::notify::template::Flavour;

/// The mail.
pub fn mail(
    c: &EmailConfig,
    n: &Notification,
    ctx: &Ctx<'_>,
    ch: &ChannelConfig,
) -> Result<Message, Failure> {
    let text = ctx.render(ch, n, Flavour::Text)?;
    let html = ctx.render(ch, n, Flavour::EmailHtml)?;
    let from: Mailbox = c
        .from
        .parse()
        .map_err(|e| Failure::permanent(format!("from {:?}: {e}", c.from)))?;
    let mut b = Message::builder()
        .from(from)
        .subject(&text.title)
        .message_id(Some(format!("<{}@prismwatch>", n.id)));
    for to in &c.to {
        let m: Mailbox = to
            .parse()
            .map_err(|e| Failure::permanent(format!("to {to:?}: {e}")))?;
        b = b.to(m);
    }
    let html_doc = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h3>{}</h3>\n{}</body></html>",
        crate::notify::template::escape_html(&text.title),
        crate::notify::template::escape_html(&text.title),
        html.body
    );
    b.multipart(MultiPart::alternative_plain_html(text.body, html_doc))
        .map_err(|e| Failure::permanent(format!("cannot build the mail: {e}")))
}

fn transport(
    c: &EmailConfig,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, Failure> {
    let (host, port) = c
        .smarthost
        .rsplit_once(':')
        .ok_or_else(|| Failure::permanent("smarthost must be host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Failure::permanent(format!("smarthost port {port:?}")))?;
    let tls = || -> Result<TlsParameters, Failure> {
        let mut p = TlsParameters::builder(host.to_string());
        if let Some(ca) = &c.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Failure::permanent(format!("ca_file {}: {e}", ca.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| Failure::permanent(format!("ca_file {}: {e}", ca.display())))?;
            p = p.add_root_certificate(cert);
        }
        p.build_rustls()
            .map_err(|e| Failure::permanent(format!("TLS settings: {e}")))
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(timeout));
    b = match c.security.as_str() {
        "tls" => b.tls(Tls::Wrapper(tls()?)),
        "starttls" => b.tls(Tls::Required(tls()?)),
        _ => b.tls(Tls::None),
    };
    if let Some(user) = &c.username {
        let password = match &c.password {
            Some(p) => p.read().map_err(Failure::permanent)?,
            None => String::new(),
        };
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    Ok(b.build())
}

/// Transports by their settings: each keeps a pool of open connections (lettre's `pool`), so a
/// busy receiver does not pay a TCP and SMTP handshake per mail.
fn pooled(
    c: &EmailConfig,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, Failure> {
    static POOL: OnceLock<Mutex<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>> =
        OnceLock::new();
    let password = match &c.password {
        Some(p) => p.read().map_err(Failure::permanent)?,
        None => String::new(),
    };
    let key = format!(
        "{}|{}|{:?}|{password}|{:?}|{}",
        c.smarthost,
        c.security,
        c.username,
        c.ca_file,
        timeout.as_millis()
    );
    let mut pool = POOL.get_or_init(Mutex::default).lock().unwrap();
    if let Some(t) = pool.get(&key) {
        return Ok(t.clone());
    }
    let t = transport(c, timeout)?;
    pool.insert(key, t.clone());
    Ok(t)
}

pub async fn send(c: &EmailConfig, ch: &ChannelConfig, n: &Notification, ctx: &Ctx<'_>) -> Attempt {
    let message = mail(c, n, ctx, ch)?;
    let smtp = pooled(c, ctx.timeout(ch))?;
    match smtp.send(message).await {
        Ok(r) => Ok(format!(
            "SMTP {} {}",
            r.code(),
            r.message().collect::<Vec<_>>().join(" ")
        )),
        Err(e) => {
            let message = format!("SMTP: {}", super::error_chain(&e));
            // 5xx: refused for good (bad address, relay denied); 4xx, timeouts, connection
            // and TLS trouble: try again.
            if e.is_permanent() {
                Err(Failure::permanent(message))
            } else {
                Err(Failure::transient(message))
            }
        }
    }
}
