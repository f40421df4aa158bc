//! Stand-ins for the notification services, as real server processes on loopback: an HTTP
//! server that checks each channel's documented format (`tests/servers/channels.py`, the
//! DingTalk signature verified with DingTalk's own algorithm in Python) and a real SMTP server
//! (aiosmtpd, `tests/servers/smtp.py`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The Python with aiosmtpd that `.ci/run` prepares (`target/pyvenv`), or
/// `$PRISMWATCH_TEST_PYTHON`.
pub fn python() -> PathBuf {
    let p = std::env::var_os("PRISMWATCH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python")
        });
    assert!(
        p.exists(),
        "{} is missing: run .ci/run, or: python3 -m venv target/pyvenv && target/pyvenv/bin/pip install aiosmtpd==1.4.6",
        p.display()
    );
    p
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/servers")
        .join(name)
}

fn start(args: &[String]) -> Child {
    let mut child = Command::new(python())
        .args(args)
        .stdout(Stdio::piped())
        // Quiet: the TLS tests make the server log refused handshakes on purpose.
        .stderr(Stdio::null())
        .spawn()
        .expect("start a test server");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "test server {args:?} did not start");
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The HTTP services.
pub struct Fakes {
    child: Child,
    pub base: String,
    http: reqwest::Client,
}

pub const DINGTALK_SECRET: &str = "SEC0123456789abcdef";

impl Fakes {
    /// DingTalk robots accept `limit` messages per `window_secs` (DingTalk: 20 per 60 s).
    pub fn start(limit: u32, window_secs: f64) -> Fakes {
        let port = free_port();
        let child = start(&[
            script("channels.py").display().to_string(),
            port.to_string(),
            DINGTALK_SECRET.into(),
            limit.to_string(),
            window_secs.to_string(),
        ]);
        Fakes {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: prismwatch::notify::channel::http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Queues answers for `path`: "500", "timeout:SECS", "429:SECS", "400", "errcode:N", "ok".
    pub async fn script(&self, path: &str, actions: &[&str]) {
        self.http
            .post(self.url("/_script"))
            .json(&serde_json::json!({"path": path, "actions": actions}))
            .send()
            .await
            .unwrap();
    }

    pub async fn requests(&self) -> Vec<Value> {
        self.http
            .get(self.url("/_requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Requests to paths starting with `prefix`.
    pub async fn requests_to(&self, prefix: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with(prefix))
            .collect()
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SMTP server writing each accepted mail into a folder.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// How the SMTP server speaks TLS.
pub enum SmtpTls<'a> {
    None,
    /// STARTTLS offered and required, with this certificate and key (PEM files).
    StartTls(&'a str, &'a str),
    /// Implicit TLS from the first byte.
    Wrapper(&'a str, &'a str),
}

impl Smtp {
    pub fn start(auth: Option<(&str, &str)>) -> Smtp {
        Self::start_tls(auth, SmtpTls::None)
    }

    pub fn start_tls(auth: Option<(&str, &str)>, tls: SmtpTls<'_>) -> Smtp {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            script("smtp.py").display().to_string(),
            port.to_string(),
            dir.path().display().to_string(),
        ];
        if let Some((u, p)) = auth {
            args.push(u.into());
            args.push(p.into());
        }
        match tls {
            SmtpTls::None => {}
            SmtpTls::StartTls(c, k) => args.extend(["--starttls".into(), c.into(), k.into()]),
            SmtpTls::Wrapper(c, k) => args.extend(["--tls".into(), c.into(), k.into()]),
        }
        Smtp {
            child: start(&args),
            port,
            dir,
        }
    }

    /// The mails received so far (raw, with `X-Envelope-To`), oldest first.
    pub fn mails(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `f` holds.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
