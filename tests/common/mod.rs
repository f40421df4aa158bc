//! Test fixtures: a real nats-server per test (see `nats.rs`), configs pointing at it, the app
//! in this process or as a child process (to kill -9), and helpers to read streams back.
#![allow(dead_code)]

pub mod channels;
pub mod manager;
pub mod nats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prismwatch::app::{self, Component};
use prismwatch::config::Config;
use prismwatch::ingest::Encoding;
use prismwatch::model::{AlertEvent, MetricPoint};
use prismwatch::rules::RuleSet;
use prismwatch::tools::publish;
use tokio_util::sync::CancellationToken;

pub use nats::NatsServer;

pub const T0: i64 = 1_764_000_000_000;
pub const SEC: i64 = 1000;
pub const GROUP: &str = "prismwatch-processor";

pub fn server() -> NatsServer {
    NatsServer::start()
}

/// A fresh server, the test config pointing at it, a JetStream context, and the streams.
pub async fn fresh() -> (NatsServer, Config, jetstream::Context) {
    let srv = server();
    let cfg = config(&srv);
    let js = js(&srv).await;
    declare(&js, &cfg).await;
    (srv, cfg, js)
}

/// `127.0.0.1:<a free port>`, for an HTTP listener.
pub fn free_listen_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// GET `path` on `addr`: (status code, body); (0, "") when nothing listens.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}

/// Config for a test: the fixture's URL, no HTTP listener, frequent checkpoints, short leases
/// and ticks (so takeovers and quiet-time transitions happen within a test's patience).
pub fn config(server: &NatsServer) -> Config {
    config_for(&server.url())
}

pub fn config_for(url: &str) -> Config {
    let mut cfg = Config::default();
    cfg.nats.url = url.to_string();
    cfg.http.listen = String::new();
    cfg.pipeline.shards = 2;
    cfg.pipeline.checkpoint_interval_ms = 200;
    cfg.processor.lease_ttl_ms = 2_000;
    cfg.processor.lease_renew_ms = 250;
    cfg.processor.tick_interval_ms = 200;
    cfg.rules.paths = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/rules")];
    cfg
}

/// The same settings as environment variables, for a child process.
pub fn env_for(url: &str) -> Vec<(String, String)> {
    [
        ("PRISMWATCH__NATS__URL", url.to_string()),
        ("PRISMWATCH__HTTP__LISTEN", String::new()),
        ("PRISMWATCH__PIPELINE__SHARDS", "2".into()),
        ("PRISMWATCH__PIPELINE__CHECKPOINT_INTERVAL_MS", "200".into()),
        ("PRISMWATCH__PROCESSOR__LEASE_TTL_MS", "2000".into()),
        ("PRISMWATCH__PROCESSOR__LEASE_RENEW_MS", "250".into()),
        ("PRISMWATCH__PROCESSOR__TICK_INTERVAL_MS", "200".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub const TEST_RULES: &str = r#"
rules:
  - name: md_delay
    metric: market_data_delay_seconds
    condition: value > 5
    for: 5m
    resolve_after: 30s
    priority: P2
    annotations: { summary: "{{ labels.exchange }} market data {{ value }} s behind" }
  - name: rate_anomaly
    metric: exchange_message_rate
    condition: score >= 0.8
    resolve_after: 1m
    priority: P3
    labels: { team: market-data }
    annotations: { summary: "{{ labels.exchange }} rate {{ value }} (z={{ zscore }})" }
"#;

pub fn rules(text: &str) -> RuleSet {
    let mut set = RuleSet::default();
    set.add_file("test-rules.yaml", text).unwrap();
    set
}

pub fn test_rules() -> RuleSet {
    rules(TEST_RULES)
}

pub fn point(name: &str, exchange: &str, ts: i64, value: f64) -> MetricPoint {
    let mut labels = BTreeMap::new();
    labels.insert("exchange".to_string(), exchange.to_string());
    MetricPoint {
        name: name.into(),
        labels,
        value,
        timestamp: ts,
    }
}

/// Two hours at 10 s steps: binance delay has a 7-minute excursion (fires) and okx a 4-minute one
/// (never fires); deribit's message rate has a one-point spike.
pub fn scenario() -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for i in 0..720i64 {
        let ts = T0 + i * 10 * SEC;
        let noise = ((i * 7919) % 17) as f64 * 0.01;
        let b = if (200..242).contains(&i) {
            9.0
        } else {
            0.3 + noise
        };
        let o = if (400..424).contains(&i) {
            9.0
        } else {
            0.3 + noise
        };
        out.push(point("market_data_delay_seconds", "binance", ts, b));
        out.push(point("market_data_delay_seconds", "okx", ts, o));
        let rate = if i == 500 {
            4000.0
        } else {
            1000.0 + ((i * 31) % 23) as f64
        };
        out.push(point("exchange_message_rate", "deribit", ts, rate));
    }
    out
}

/// The scenario on 8 copies of each exchange (so over every partition), long enough to be
/// interrupted.
pub fn big_scenario() -> Vec<MetricPoint> {
    let base = scenario();
    let mut out = Vec::new();
    for chunk in base.chunks(3) {
        for copy in 0..8 {
            for p in chunk {
                let mut p = p.clone();
                let ex = format!("{}-{copy}", p.labels["exchange"]);
                p.labels.insert("exchange".into(), ex);
                out.push(p);
            }
        }
    }
    out
}

/// Partition → owning member, from the lease bucket.
pub async fn lease_owners(js: &jetstream::Context, group: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Ok(kv) = js.get_key_value("PRISM_LEASES").await else {
        return out;
    };
    for p in 0..4 {
        if let Ok(Some(v)) = kv.get(format!("lease.{group}.{p}")).await {
            out.insert(p, String::from_utf8_lossy(&v).into_owned());
        }
    }
    out
}

pub async fn js(server: &NatsServer) -> jetstream::Context {
    js_at(&server.url()).await
}

pub async fn js_at(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// Declares the streams as the processor would.
pub async fn declare(js: &jetstream::Context, cfg: &Config) {
    prismwatch::bus::ensure_streams(js, &cfg.streams)
        .await
        .unwrap();
}

pub async fn publish(js: &jetstream::Context, points: &[MetricPoint], batch: usize) {
    publish::publish_points(js, points, batch, Encoding::MsgPack, None)
        .await
        .unwrap();
}

/// Every message in a stream, in order: (subject, headers, payload).
pub async fn read_stream(
    js: &jetstream::Context,
    name: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    read_stream_filtered(js, name, "").await
}

pub async fn read_stream_filtered(
    js: &jetstream::Context,
    name: &str,
    filter: &str,
) -> Vec<(String, Option<async_nats::HeaderMap>, bytes::Bytes)> {
    let mut stream = js.get_stream(name).await.unwrap();
    let n = stream.info().await.unwrap().state.messages;
    if n == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    loop {
        let m = match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            Ok(Some(m)) => m.unwrap(),
            _ => break,
        };
        out.push((m.subject.to_string(), m.headers.clone(), m.payload.clone()));
        if m.info().unwrap().pending == 0 {
            break;
        }
    }
    out
}

pub async fn alert_events(js: &jetstream::Context) -> Vec<AlertEvent> {
    read_stream(js, "PRISM_ALERTS")
        .await
        .into_iter()
        .map(|(_, _, p)| serde_json::from_slice(&p).unwrap())
        .collect()
}

/// Dead letters: (reason header, headers, payload).
pub async fn dead_letters(
    js: &jetstream::Context,
) -> Vec<(String, async_nats::HeaderMap, bytes::Bytes)> {
    read_stream(js, "PRISM_DEADLETTER")
        .await
        .into_iter()
        .map(|(_, h, p)| {
            let h = h.unwrap();
            let reason = h.get("Prism-Reject-Reason").unwrap().to_string();
            (reason, h, p)
        })
        .collect()
}

/// True when every partition's consumer exists (created at or after `since`, ms since the
/// epoch) and has every message of its partition delivered and acked.
pub async fn consumed_since(
    js: &jetstream::Context,
    group: &str,
    partitions: u32,
    since: i64,
) -> bool {
    let Ok(stream) = js.get_stream("PRISM_METRICS").await else {
        return false;
    };
    for p in 0..partitions {
        match stream.consumer_info(format!("{group}-{p}")).await {
            Ok(info)
                if info.num_pending == 0
                    && info.num_ack_pending == 0
                    && (info.created.unix_timestamp_nanos() / 1_000_000) as i64 >= since => {}
            _ => return false,
        }
    }
    true
}

pub async fn consumed(js: &jetstream::Context, group: &str, partitions: u32) -> bool {
    consumed_since(js, group, partitions, 0).await
}

/// Waits until the processor group has consumed and acked every message.
pub async fn wait_consumed(js: &jetstream::Context, group: &str, timeout: Duration) {
    wait_consumed_since(js, group, 0, timeout).await
}

/// Waits until consumers created at or after `since` (a new owner's) have consumed and acked
/// every message.
pub async fn wait_consumed_since(
    js: &jetstream::Context,
    group: &str,
    since: i64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while !consumed_since(js, group, 4, since).await {
        assert!(
            Instant::now() < deadline,
            "the processor did not consume the stream in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `f` holds (polling), or fails with `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// (rule, exchange label, status, event time) of each event.
pub fn summary(events: &[AlertEvent]) -> Vec<(String, String, String, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.rule.clone(),
                e.labels.get("exchange").cloned().unwrap_or_default(),
                e.status.token().to_string(),
                e.event_time,
            )
        })
        .collect()
}

/// Sorted by the deterministic event key, for comparisons across runs with other batching.
pub fn sorted(mut events: Vec<AlertEvent>) -> Vec<AlertEvent> {
    events.sort_by(|a, b| a.sort_key().partial_cmp(&b.sort_key()).unwrap());
    events
}

/// The app running in this process (processor and, if configured, HTTP).
pub struct RunningApp {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    pub fn start(cfg: Config, rules: RuleSet) -> Self {
        Self::start_with(cfg, rules, vec![Component::Processor])
    }

    pub fn start_with(cfg: Config, rules: RuleSet, components: Vec<Component>) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(app::run(cfg, rules, components, stop.clone()));
        Self { stop, task }
    }

    /// Stops it as SIGTERM would, and returns what it returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the app stops within 30 s")
            .unwrap()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Runs the app until it has taken over every partition and consumed the whole metrics
/// stream, then stops it.
pub async fn process_all(cfg: &Config, rules: RuleSet) {
    let js = js_at(&cfg.nats.url).await;
    let since = prismwatch::tools::clock::now_ms() - 5;
    let app = RunningApp::start(cfg.clone(), rules);
    wait_consumed_since(
        &js,
        &cfg.ingest.consumer_name,
        since,
        Duration::from_secs(60),
    )
    .await;
    app.stop().await.unwrap();
}

/// `prismwatch run` as a child process, killed (SIGKILL) when dropped, even by a failing test.
pub struct ChildProcessor {
    child: Child,
    pub stderr: Option<PathBuf>,
}

impl ChildProcessor {
    /// Starts `prismwatch run` against `url` with the test settings, `rules_file` and `extra`
    /// environment; its log goes to `log` when given.
    pub fn spawn(
        url: &str,
        rules_file: &str,
        extra: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> Self {
        Self::spawn_with(url, rules_file, &["--only", "processor"], extra, log)
    }

    /// [`ChildProcessor::spawn`] with `run`'s arguments (e.g. `--only manager`).
    pub fn spawn_with(
        url: &str,
        rules_file: &str,
        args: &[&str],
        extra: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prismwatch"));
        cmd.arg("run")
            .args(args)
            .env(
                "PRISMWATCH_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/prismwatch.yaml"),
            )
            .env("PRISMWATCH__RULES__PATHS", format!("[{rules_file}]"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null());
        for (k, v) in env_for(url) {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        match &log {
            Some(p) => cmd.stderr(std::fs::File::create(p).unwrap()),
            None => cmd.stderr(Stdio::null()),
        };
        ChildProcessor {
            child: cmd.spawn().unwrap(),
            stderr: log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for it to exit; returns whether it did.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        self.stderr
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for ChildProcessor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `text` as a rules file in `dir`; returns its path.
pub fn rules_file(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("rules.yaml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The HTTP API with one viewer key, for tests that read what the processor exposes.
pub struct Viewer {
    pub listen: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Viewer {
    const KEY: &'static str = "viewer-key-0123456789abcdef";

    /// Sets `cfg` up with a free HTTP listener and a viewer API key.
    pub fn configure(cfg: &mut Config) -> Viewer {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("viewer");
        std::fs::write(&key_file, Self::KEY).unwrap();
        cfg.api.keys = vec![prismwatch::api::config::ApiKey {
            name: "viewer".into(),
            role: prismwatch::api::Role::Viewer,
            key: prismwatch::config::secret::Secret::File(key_file),
        }];
        cfg.http.listen = free_listen_addr();
        let _ = rustls::crypto::ring::default_provider().install_default();
        Viewer {
            listen: cfg.http.listen.clone(),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// GET `path` with the viewer's key: (status, body), `None` while nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.listen))
            .bearer_auth(Self::KEY)
            .send()
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    /// GET `path` as JSON (`Null` when unreachable or not JSON).
    pub async fn json(&self, path: &str) -> serde_json::Value {
        match self.get(path).await {
            Some((_, body)) => serde_json::from_str(&body).unwrap_or_default(),
            None => serde_json::Value::Null,
        }
    }
}
