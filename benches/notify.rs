//! `cargo bench --bench notify`: notifications/s the notifier workers deliver per channel,
//! with 1 and 3 workers (`prismwatch run --only notify` processes), against loopback servers:
//! an HTTP server in this process answering as each service does (Slack `ok`, DingTalk
//! `errcode 0`, PagerDuty 202, Telegram `ok: true`, a webhook 200) and a real SMTP server
//! (aiosmtpd). From the first publish to the last outcome stored.
//!
//! Rate limits are lifted (10,000 per second) so the figures are the workers' own; with the
//! services' real limits (Slack 1/s, DingTalk 20/min) a storm is merged into few messages.

#[path = "../tests/common/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::routing::post;
use clap::Parser;

use nats::NatsServer;
use prismwatch::config::Config;
use prismwatch::model::{AlertStatus, Notification, NotificationKind, NotifiedAlert, Priority};
use prismwatch::{bus, subjects};

#[derive(Parser)]
#[command(name = "notify bench")]
struct Cli {
    /// Notifications per run.
    #[arg(long, default_value_t = 3_000)]
    notifications: usize,
    /// Channels to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "webhook,slack,dingtalk,pagerduty,telegram,email"
    )]
    channels: Vec<String>,
    #[arg(long, hide = true)]
    bench: bool,
}

fn notification(i: usize) -> Notification {
    Notification {
        id: format!("b.{i:08x}.1"),
        kind: NotificationKind::Group,
        receiver: "b".into(),
        status: AlertStatus::Firing,
        priority: Priority::P2,
        group_key: format!("{{}}:{{alertname=\"r{}\"}}", i % 50),
        group_labels: Default::default(),
        common_labels: Default::default(),
        common_annotations: Default::default(),
        alerts: vec![NotifiedAlert {
            id: format!("{i:016x}-1764000000000"),
            fingerprint: format!("{i:016x}"),
            rule: format!("r{}", i % 50),
            priority: Priority::P2,
            status: AlertStatus::Firing,
            labels: [
                ("exchange".to_string(), "binance".to_string()),
                ("service".to_string(), format!("svc{}", i % 100)),
            ]
            .into(),
            annotations: [("summary".to_string(), format!("bench alert {i}"))].into(),
            value: i as f64,
            starts_at: 1_764_000_000_000,
            ends_at: None,
            acknowledged: None,
            flapping: false,
            generator_url: String::new(),
        }],
        truncated: 0,
        storm: None,
        created_at: 1_764_000_000_000,
        sequence: 1,
    }
}

/// The loopback HTTP services; counts requests.
async fn http_services(count: Arc<AtomicU64>) -> String {
    let c = |count: Arc<AtomicU64>, status: u16, body: &'static str| {
        move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        }
    };
    let app = axum::Router::new()
        .route("/webhook", post(c(count.clone(), 200, "{}")))
        .route("/slack", post(c(count.clone(), 200, "ok")))
        .route(
            "/dingtalk",
            post(c(count.clone(), 200, r#"{"errcode":0,"errmsg":"ok"}"#)),
        )
        .route(
            "/pagerduty",
            post(c(
                count.clone(),
                202,
                r#"{"status":"success","message":"Event processed"}"#,
            )),
        )
        .route(
            "/telegram/{bot}/sendMessage",
            post(c(
                count.clone(),
                200,
                r#"{"ok":true,"result":{"message_id":1}}"#,
            )),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Smtp(Child, u16, tempfile::TempDir);

fn smtp() -> Option<Smtp> {
    let python = std::env::var_os("PRISMWATCH_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv/bin/python").into());
    if !python.exists() {
        eprintln!("no {} (run .ci/run): email not measured", python.display());
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/servers/smtp.py"
        ))
        .arg(port.to_string())
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    Some(Smtp(child, port, dir))
}

fn channel_yaml(channel: &str, base: &str, smtp_port: u16) -> String {
    let fast = "rate_limit: {messages: 10000, per: 1s}";
    match channel {
        "webhook" => format!("webhook_configs: [{{url: {{env: PW_BENCH_URL}}}}]  # {base}/webhook"),
        "slack" => format!("slack_configs: [{{url: {{env: PW_BENCH_URL}}, {fast}}}]"),
        "dingtalk" => format!("dingtalk_configs: [{{url: {{env: PW_BENCH_URL}}, secret: {{env: PW_BENCH_URL}}, {fast}}}]"),
        "pagerduty" => format!("pagerduty_configs: [{{routing_key: {{env: PW_BENCH_URL}}, url: {base}/pagerduty, {fast}}}]"),
        "telegram" => format!("telegram_configs: [{{bot_token: {{env: PW_BENCH_URL}}, chat_id: '1', api_url: {base}/telegram, {fast}}}]"),
        "email" => format!("email_configs: [{{to: [ops@example.org], from: pw@example.org, smarthost: '127.0.0.1:{smtp_port}', security: plain}}]"),
        other => panic!("unknown channel {other}"),
    }
}

fn env_url(channel: &str, base: &str) -> String {
    match channel {
        "webhook" | "slack" => format!("{base}/{channel}"),
        "dingtalk" => format!("{base}/dingtalk?access_token=t"),
        _ => "0123456789abcdef0123456789abcdef".into(),
    }
}

async fn run_one(
    cli: &Cli,
    channel: &str,
    workers: usize,
    base: &str,
    smtp_port: u16,
    requests: &AtomicU64,
) -> anyhow::Result<(f64, u64)> {
    let server = NatsServer::start();
    let mut cfg = Config::default();
    cfg.nats.url = server.url();
    let js = jetstream::new(bus::connect(&cfg.nats).await?);
    bus::ensure_streams(&js, &cfg.streams).await?;
    let dir = tempfile::tempdir()?;
    let routing = dir.path().join("routing.yaml");
    std::fs::write(
        &routing,
        format!(
            "route: {{receiver: b}}\nreceivers:\n  - name: b\n    {}\n",
            channel_yaml(channel, base, smtp_port)
        ),
    )?;
    let mut procs: Vec<Child> = (0..workers)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_prismwatch"))
                .args(["run", "--only", "notify"])
                .env(
                    "PRISMWATCH_CONFIG",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/config/prismwatch.yaml"),
                )
                .env("PRISMWATCH__NATS__URL", server.url())
                .env("PRISMWATCH__HTTP__LISTEN", "")
                .env("PRISMWATCH__ALERTING__ROUTING_FILE", &routing)
                .env("PW_BENCH_URL", env_url(channel, base))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Let the workers attach before the clock starts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = requests.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut acks = Vec::with_capacity(cli.notifications);
    for i in 0..cli.notifications {
        let n = notification(i);
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", n.id.as_str());
        acks.push(
            js.publish_with_headers(
                subjects::notify_subject("b"),
                h,
                serde_json::to_vec(&n)?.into(),
            )
            .await?,
        );
    }
    for a in acks {
        a.await?;
    }
    let mut stream = js.get_stream(subjects::NOTIFY_STREAM).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while stream.info().await?.state.messages < 2 * cli.notifications as u64 {
        anyhow::ensure!(Instant::now() < deadline, "{channel}: not all delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = cli.notifications as f64 / start.elapsed().as_secs_f64();
    for p in &mut procs {
        let _ = p.kill();
        let _ = p.wait();
    }
    Ok((rate, requests.load(Ordering::Relaxed) - before))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let requests = Arc::new(AtomicU64::new(0));
            let base = http_services(requests.clone()).await;
            let smtp = smtp();
            println!("## Notifier workers ({} notifications of one alert each per run, loopback services, rate limits lifted)", cli.notifications);
            println!("| channel | 1 worker: notifications/s | requests (mails) | 3 workers: notifications/s | requests (mails) |");
            println!("|---|---|---|---|---|");
            for channel in &cli.channels {
                if channel == "email" && smtp.is_none() {
                    continue;
                }
                let port = smtp.as_ref().map_or(0, |s| s.1);
                let mails = || smtp.as_ref().map_or(0, |s| std::fs::read_dir(s.2.path()).map_or(0, |d| d.count() as u64));
                let m0 = mails();
                let (r1, mut q1) = run_one(&cli, channel, 1, &base, port, &requests).await?;
                let m1 = mails();
                let (r3, mut q3) = run_one(&cli, channel, 3, &base, port, &requests).await?;
                if channel == "email" {
                    (q1, q3) = (m1 - m0, mails() - m1);
                }
                println!("| {channel} | {r1:.0} | {q1} | {r3:.0} | {q3} |");
            }
            if let Some(mut s) = smtp {
                let _ = s.0.kill();
                let _ = s.0.wait();
                drop(s.2);
            }
            Ok(())
        })
}
