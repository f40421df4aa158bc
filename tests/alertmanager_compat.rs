//! Alertmanager API v2 compatibility with the real clients (Debian packages, which `.ci/run`
//! installs): `amtool` 0.25 adds, queries and silences alerts against PrismWatch, and a real
//! `prometheus` 2.42 sends a rule firing on a scraped target to PrismWatch, where it is routed,
//! notified (to a webhook receiver on loopback) and resolved. `promtool check metrics` passes
//! on PrismWatch's `/metrics`.
//!
//! Without the packages the tests say so and stop, unless `PRISMWATCH_REQUIRE_PROMETHEUS_TOOLS`
//! is set (as `.ci/run` does once it has installed them): then a missing tool fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::channels::{eventually, python, Fakes};
use common::RunningApp;
use prismwatch::alerting::AlertingConfig;
use prismwatch::api::config::{ApiKey, Role};
use prismwatch::app::Component;
use prismwatch::config::secret::Secret;
use serde_json::Value;

/// The installed tool, or `None` after saying why the test stops.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("PRISMWATCH_REQUIRE_PROMETHEUS_TOOLS").is_none(),
            "{name} is not installed (apt-get install prometheus prometheus-alertmanager)"
        );
        eprintln!(
            "SKIPPED: {name} is not installed (Debian packages prometheus, prometheus-alertmanager; .ci/run installs them)"
        );
    }
    found
}

fn key_text(name: &str) -> String {
    format!("{name}-key-0123456789abcdef")
}

fn key(dir: &Path, name: &str, role: Role) -> ApiKey {
    let p = dir.join(format!("{name}.key"));
    std::fs::write(&p, key_text(name)).unwrap();
    ApiKey {
        name: name.into(),
        role,
        key: Secret::File(p),
    }
}

/// PrismWatch (manager, notifier, API) on a free port, with wall time, routing every alert to
/// a webhook receiver on a loopback stand-in.
struct Pw {
    _srv: common::NatsServer,
    app: Option<RunningApp>,
    listen: String,
    fakes: Fakes,
    dir: tempfile::TempDir,
}

async fn start_prismwatch() -> Pw {
    let (srv, mut cfg, _js) = common::fresh().await;
    let fakes = Fakes::start(20, 60.0);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = d.join("webhook.url");
    std::fs::write(&url, fakes.url("/webhook/team")).unwrap();
    let routing = d.join("routing.yaml");
    std::fs::write(
        &routing,
        format!(
            "route:\n  receiver: team\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n\
             receivers:\n  - name: team\n    webhook_configs:\n      - url: {{file: {}}}\n",
            url.display()
        ),
    )
    .unwrap();
    let listen = common::free_listen_addr();
    cfg.alerting = AlertingConfig {
        routing_file: routing.clone(),
        ..Default::default()
    };
    cfg.http.listen = listen.clone();
    cfg.api.keys = vec![
        key(d, "viewer", Role::Viewer),
        key(d, "ops", Role::Operator),
        key(d, "prometheus", Role::Operator),
    ];
    let app = RunningApp::start_with(
        cfg,
        common::test_rules(),
        vec![Component::Manager, Component::Notify],
    );
    // Ready once the API has read the manager's state.
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    eventually("the API to answer", 30, || {
        let r = client
            .get(format!("{base}/api/v2/alerts"))
            .basic_auth("viewer", Some(key_text("viewer")))
            .send();
        async move { r.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    Pw {
        _srv: srv,
        app: Some(app),
        listen,
        fakes,
        dir,
    }
}

impl Pw {
    /// `http://<name>:<key>@host:port`: amtool's basic auth.
    fn url_as(&self, name: &str) -> String {
        format!("http://{name}:{}@{}", key_text(name), self.listen)
    }

    async fn stop(mut self) {
        if let Some(a) = self.app.take() {
            a.stop().await.unwrap();
        }
    }
}

/// Runs a tool; (exit ok, stdout, stderr).
async fn run(bin: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin)
            .args(args)
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the tool answers within 60 s")
    .expect("the tool starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn amtool_json(amtool: &Path, url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--alertmanager.url", url, "-o", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = run(amtool, &all).await;
    assert!(ok, "amtool {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("amtool {args:?}: {e}: {out}"))
}

fn alertnames(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_adds_queries_silences_and_expires_against_prismwatch() {
    let Some(amtool) = tool("amtool") else { return };
    let pw = start_prismwatch().await;
    let (viewer, ops) = (pw.url_as("viewer"), pw.url_as("ops"));

    // amtool's own alert add (POST /api/v2/alerts), as an operator.
    for (name, sev) in [("DiskFull", "critical"), ("QueueSlow", "warning")] {
        let (ok, _, err) = run(
            &amtool,
            &[
                "--alertmanager.url",
                &ops,
                "alert",
                "add",
                &format!("alertname={name}"),
                "instance=db-1",
                &format!("severity={sev}"),
                "--annotation=summary=from amtool",
            ],
        )
        .await;
        assert!(ok, "amtool alert add: {err}");
    }
    // A viewer may read but not add: amtool reports the refusal.
    let (ok, _, err) = run(
        &amtool,
        &[
            "--alertmanager.url",
            &viewer,
            "alert",
            "add",
            "alertname=Nope",
        ],
    )
    .await;
    assert!(
        !ok && (err.contains("403") || err.contains("needs operator")),
        "{err}"
    );

    eventually("amtool alert query to list both alerts", 20, || {
        let (a, u) = (amtool.clone(), viewer.clone());
        async move {
            alertnames(&amtool_json(&a, &u, &["alert", "query"]).await) == ["DiskFull", "QueueSlow"]
        }
    })
    .await;
    let listed = amtool_json(&amtool, &viewer, &["alert", "query"]).await;
    let disk = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "DiskFull")
        .unwrap();
    assert_eq!(disk["labels"]["priority"], "P1", "severity critical is P1");
    assert_eq!(disk["annotations"]["summary"], "from amtool");
    assert_eq!(disk["status"]["state"], "active");
    assert_eq!(disk["receivers"][0]["name"], "team");
    assert_eq!(disk["fingerprint"].as_str().unwrap().len(), 16);
    // A matcher narrows the query.
    let only = amtool_json(&amtool, &viewer, &["alert", "query", "severity=warning"]).await;
    assert_eq!(alertnames(&only), ["QueueSlow"]);

    // Silence add as the operator (author and comment kept), query, then the alert shows
    // as suppressed only with -s.
    let (ok, out, err) = run(
        &amtool,
        &[
            "--alertmanager.url",
            &ops,
            "silence",
            "add",
            "alertname=DiskFull",
            "-a",
            "alice",
            "-c",
            "disk swap tonight",
            "-d",
            "2h",
        ],
    )
    .await;
    assert!(ok, "amtool silence add: {err}");
    let id = out.trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id:?}");
    let silences = amtool_json(&amtool, &viewer, &["silence", "query"]).await;
    let s = &silences.as_array().unwrap()[0];
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["createdBy"], "alice");
    assert_eq!(s["comment"], "disk swap tonight");
    assert_eq!(s["status"]["state"], "active");
    assert_eq!(s["matchers"][0]["name"], "alertname");
    let (ok, quiet, _) = run(
        &amtool,
        &["--alertmanager.url", &viewer, "silence", "query", "-q"],
    )
    .await;
    assert!(ok && quiet.trim() == id, "silence query -q: {quiet}");
    eventually("the silenced alert to leave the default query", 20, || {
        let (a, u) = (amtool.clone(), viewer.clone());
        async move { alertnames(&amtool_json(&a, &u, &["alert", "query"]).await) == ["QueueSlow"] }
    })
    .await;
    let with_silenced = amtool_json(&amtool, &viewer, &["alert", "query", "-s"]).await;
    let disk = with_silenced
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "DiskFull")
        .expect("listed with -s");
    assert_eq!(disk["status"]["state"], "suppressed");
    assert_eq!(disk["status"]["silencedBy"][0], id.as_str());

    // Expire: the silence goes to the expired list, the alert comes back.
    let (ok, _, err) = run(
        &amtool,
        &["--alertmanager.url", &ops, "silence", "expire", &id],
    )
    .await;
    assert!(ok, "amtool silence expire: {err}");
    let expired = amtool_json(&amtool, &viewer, &["silence", "query", "--expired"]).await;
    assert_eq!(expired[0]["id"], id.as_str());
    assert_eq!(expired[0]["status"]["state"], "expired");
    assert_eq!(
        amtool_json(&amtool, &viewer, &["silence", "query"]).await,
        Value::Array(vec![])
    );
    eventually("the alert to be active again", 20, || {
        let (a, u) = (amtool.clone(), viewer.clone());
        async move {
            alertnames(&amtool_json(&a, &u, &["alert", "query"]).await) == ["DiskFull", "QueueSlow"]
        }
    })
    .await;
    // Expiring an unknown silence fails with a 404 (amtool 0.25's spec predates that answer,
    // so it reports the status code).
    let (ok, _, err) = run(
        &amtool,
        &[
            "--alertmanager.url",
            &ops,
            "silence",
            "expire",
            "00000000-0000-4000-8000-000000000000",
        ],
    )
    .await;
    assert!(!ok && err.contains("404"), "{err}");

    // A bearer token through amtool's http config file works the same; a wrong key is 401.
    let http_cfg = pw.dir.path().join("amtool-http.yml");
    std::fs::write(
        &http_cfg,
        format!(
            "authorization:\n  type: Bearer\n  credentials: {}\n",
            key_text("viewer")
        ),
    )
    .unwrap();
    let base = format!("http://{}", pw.listen);
    let via_bearer = amtool_json(
        &amtool,
        &base,
        &[
            "--http.config.file",
            http_cfg.to_str().unwrap(),
            "alert",
            "query",
        ],
    )
    .await;
    assert_eq!(alertnames(&via_bearer), ["DiskFull", "QueueSlow"]);
    let forged = format!("http://viewer:not-the-key-0123456789@{}", pw.listen);
    let (ok, _, err) = run(&amtool, &["--alertmanager.url", &forged, "alert", "query"]).await;
    assert!(
        !ok && (err.contains("401") || err.contains("unknown API key")),
        "{err}"
    );

    // What the webhook receiver got: the firing alerts, routed to `team`.
    let fakes = &pw.fakes;
    eventually("the webhook to receive DiskFull", 20, || async {
        fakes
            .requests_to("/webhook/team")
            .await
            .iter()
            .any(|r| r["body"].to_string().contains("DiskFull"))
    })
    .await;
    pw.stop().await;
}

/// Serves `dir` over HTTP on a free port (the scrape target): (child, host:port).
fn file_server(dir: &Path) -> (std::process::Child, String) {
    let listen = common::free_listen_addr();
    let port = listen.rsplit(':').next().unwrap().to_string();
    let child = std::process::Command::new(python())
        .args([
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python's http.server");
    (child, listen)
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_rule_on_a_scraped_target_is_routed_notified_and_resolved() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let pw = start_prismwatch().await;
    let d = pw.dir.path();
    // The scraped target: a file of metrics in Prometheus' text format.
    let target = d.join("target");
    std::fs::create_dir(&target).unwrap();
    let set_depth = |v: u32| {
        let tmp = target.join("metrics.tmp");
        std::fs::write(
            &tmp,
            format!("# TYPE collector_queue_depth gauge\ncollector_queue_depth{{exchange=\"binance\"}} {v}\n"),
        )
        .unwrap();
        std::fs::rename(&tmp, target.join("metrics")).unwrap();
    };
    set_depth(10);
    let (server, target_addr) = file_server(&target);
    let _server = Kill(server);

    std::fs::write(
        d.join("rules.yml"),
        "groups:\n  - name: collectors\n    rules:\n      - alert: CollectorQueueBacklog\n        expr: collector_queue_depth > 100\n        labels: {severity: critical, team: market-data}\n        annotations: {summary: 'queue {{ $value }} on {{ $labels.exchange }}'}\n",
    )
    .unwrap();
    let token = d.join("prometheus.token");
    std::fs::write(&token, key_text("prometheus")).unwrap();
    let pw_host = pw.listen.clone();
    std::fs::write(
        d.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n  - job_name: collector\n    static_configs: [{{targets: ['{target_addr}']}}]\n\
             alerting:\n  alertmanagers:\n    - api_version: v2\n      authorization: {{type: Bearer, credentials_file: {token}}}\n      static_configs: [{{targets: ['{pw_host}']}}]\n",
            rules = d.join("rules.yml").display(),
            token = token.display(),
        ),
    )
    .unwrap();
    let web = common::free_listen_addr();
    let prom = std::process::Command::new(&prometheus)
        .arg(format!(
            "--config.file={}",
            d.join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
        .arg(format!("--web.listen-address={web}"))
        .arg("--rules.alert.resend-delay=1s")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(d.join("prometheus.log")).unwrap(),
        ))
        .spawn()
        .expect("start prometheus");
    let _prom = Kill(prom);

    let fakes = &pw.fakes;
    let firing = |r: &Value, status: &str| {
        let body: Value =
            serde_json::from_str(r["body"].as_str().unwrap_or("{}")).unwrap_or_default();
        body["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["labels"]["alertname"] == "CollectorQueueBacklog" && x["status"] == status
            })
        })
    };
    // Nothing fires at depth 10; then the backlog.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(fakes.requests_to("/webhook/team").await.is_empty());
    set_depth(500);
    let log = d.join("prometheus.log");
    eventually(
        "Prometheus' alert to be notified through PrismWatch",
        60,
        || async {
            let seen = fakes.requests_to("/webhook/team").await;
            if seen.is_empty() {
                let l = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(!l.contains("level=error"), "prometheus: {l}");
            }
            seen.iter().any(|r| firing(r, "firing"))
        },
    )
    .await;
    let sent = fakes.requests_to("/webhook/team").await;
    let body: Value = serde_json::from_str(
        sent.iter().find(|r| firing(r, "firing")).unwrap()["body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let alert = &body["alerts"][0];
    assert_eq!(body["receiver"], "team");
    assert_eq!(alert["labels"]["exchange"], "binance");
    assert_eq!(alert["labels"]["job"], "collector");
    assert_eq!(alert["labels"]["priority"], "P1");
    assert_eq!(alert["annotations"]["summary"], "queue 500 on binance");
    assert!(alert["generatorURL"]
        .as_str()
        .unwrap()
        .contains("/graph?g0.expr="));

    // The backlog clears: Prometheus sends the end, PrismWatch resolves and notifies once.
    set_depth(3);
    eventually("the resolved notification", 60, || async {
        fakes
            .requests_to("/webhook/team")
            .await
            .iter()
            .any(|r| firing(r, "resolved"))
    })
    .await;
    // Prometheus keeps re-sending the resolved alert for a while: still one firing and one
    // resolved notification, and no active alert left.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = fakes.requests_to("/webhook/team").await;
    let n_firing = sent.iter().filter(|r| firing(r, "firing")).count();
    let n_resolved = sent.iter().filter(|r| firing(r, "resolved")).count();
    assert_eq!((n_firing, n_resolved), (1, 1), "{sent:#?}");
    let active: Value = reqwest::Client::new()
        .get(format!("http://{}/api/v2/alerts", pw.listen))
        .bearer_auth(key_text("viewer"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(active, Value::Array(vec![]));
    pw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_metrics_endpoint() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let pw = start_prismwatch().await;
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", pw.listen))
        .bearer_auth(key_text("viewer"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Prometheus' conventions: every family from the start (at 0, each reject reason its own
    // series), the build, the process.
    for want in [
        "prismwatch_build_info{version=\"",
        "prismwatch_ingest_points_rejected_total{reason=\"late\"} 0",
        "prismwatch_ingest_points_rejected_total{reason=\"invalid_name\"} 0",
        "prismwatch_alerts_events_total{priority=\"p1\",status=\"firing\"} 0",
        "prismwatch_ingest_messages_received_total 0",
        "# TYPE prismwatch_pipeline_batch_duration_seconds histogram",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    let mut child = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    pw.stop().await;
}
