//! The HTTP API against a real nats-server and a running alert manager: the authorisation
//! matrix of every route (401 without credentials, 403 with too small a role, success with
//! the right one), forged and expired tokens, the audit trail of every change, JSON errors.

use crate::common;

use std::time::Duration;

use common::manager::Scenario;
use prismwatch::api::config::{ApiKey, Role};
use prismwatch::config::secret::Secret;
use prismwatch::model::Priority;
use reqwest::Method;
use serde_json::{json, Value};

const ROUTING: &str = r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers: [{name: team}]
"#;

const JWT_SECRET: &str = "jwt-secret-for-tests-0123456789";

/// The API's address and a client.
struct Http {
    base: String,
    http: reqwest::Client,
}

/// A manager scenario (virtual time) with the API in front.
struct Api {
    s: Scenario,
    h: Http,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Api {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.h
    }
}

fn key(dir: &std::path::Path, name: &str, role: Role) -> ApiKey {
    let p = dir.join(name);
    std::fs::write(&p, format!("{name}-key-0123456789abcdef")).unwrap();
    ApiKey {
        name: name.into(),
        role,
        key: Secret::File(p),
    }
}

fn token(name: &str) -> String {
    format!("{name}-key-0123456789abcdef")
}

fn jwt(sub: &str, role: &str, secret: &str, exp_in_secs: i64) -> String {
    let exp = prismwatch::tools::clock::now_ms() / 1000 + exp_in_secs;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "role": role, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let listen = common::free_listen_addr();
    let (l, d) = (listen.clone(), dir.path().to_path_buf());
    let s = Scenario::start_with(ROUTING, move |cfg| {
        cfg.http.listen = l;
        cfg.api.keys = vec![
            key(&d, "viewer", Role::Viewer),
            key(&d, "ops", Role::Operator),
            key(&d, "root", Role::Admin),
        ];
        let jwt = d.join("jwt");
        std::fs::write(&jwt, JWT_SECRET).unwrap();
        cfg.api.jwt_hs256_secret = Some(Secret::File(jwt));
    })
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    Api {
        s,
        h: Http {
            base: format!("http://{listen}"),
            http: reqwest::Client::new(),
        },
        _dir: dir,
    }
}

impl Http {
    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(20));
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        // Not listening yet (the app starts in the background): code 0.
        let resp = match r.send().await {
            Ok(resp) => resp,
            Err(e) => return (0, Value::String(e.to_string())),
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GETs `path` as a viewer until `ok` holds (bounded); returns the last answer.
    async fn until(&self, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (code, v) = self
                .call(Method::GET, path, Some(&token("viewer")), None)
                .await;
            if code == 200 && ok(&v) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "{path}: {code} {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until the API has read the manager's state.
    async fn ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (code, _) = self
                .call(Method::GET, "/api/v1/alerts", Some(&token("viewer")), None)
                .await;
            if code == 200 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "API not ready: {code}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_credentials_and_roles_and_does_its_job() {
    let mut api = start().await;
    let e = api
        .s
        .d
        .fire("disk_full", Priority::P1, &[("service", "storage")])
        .await;
    let other = api
        .s
        .d
        .fire("cpu_high", Priority::P3, &[("service", "api")])
        .await;
    api.s.d.advance_to(40).await;
    api.ready().await;
    let id = e.id.clone();

    // (method, path, body, role needed)
    let routes: Vec<(Method, String, Option<Value>, Role)> = vec![
        (Method::GET, "/api/v1/status".into(), None, Role::Viewer),
        (Method::GET, "/api/v1/alerts".into(), None, Role::Viewer),
        (
            Method::GET,
            format!("/api/v1/alerts/{id}"),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/api/v1/silences".into(), None, Role::Viewer),
        (
            Method::POST,
            format!("/api/v1/alerts/{id}/ack"),
            Some(json!({"comment": "on it"})),
            Role::Operator,
        ),
        (
            Method::POST,
            format!("/api/v1/alerts/{id}/unack"),
            None,
            Role::Operator,
        ),
        (
            Method::POST,
            format!("/api/v1/alerts/{}/resolve", other.id),
            None,
            Role::Operator,
        ),
        (
            Method::POST,
            "/api/v1/silences".into(),
            Some(json!({"matchers": ["service=api"], "duration": "1h"})),
            Role::Operator,
        ),
        (
            Method::DELETE,
            "/api/v1/silences/nope".into(),
            None,
            Role::Operator,
        ),
        (Method::POST, "/api/v1/reload".into(), None, Role::Admin),
        (Method::GET, "/api/v1/rules".into(), None, Role::Viewer),
        (
            Method::GET,
            "/api/v1/rules/md_delay".into(),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/api/v1/routes".into(), None, Role::Viewer),
        (Method::GET, "/api/v1/routes/0".into(), None, Role::Viewer),
        (
            Method::GET,
            "/api/v1/series?metric=x".into(),
            None,
            Role::Viewer,
        ),
        (
            Method::GET,
            format!("/api/v1/alerts/{id}/series"),
            None,
            Role::Viewer,
        ),
        (Method::GET, "/api/v1/audit".into(), None, Role::Admin),
        (Method::GET, "/api/v1/keys".into(), None, Role::Admin),
        (
            Method::GET,
            "/api/v1/openapi.json".into(),
            None,
            Role::Viewer,
        ),
        (
            Method::POST,
            "/api/v1/keys".into(),
            Some(json!({"name": "bot", "role": "viewer"})),
            Role::Admin,
        ),
        (
            Method::DELETE,
            "/api/v1/keys/nope".into(),
            None,
            Role::Admin,
        ),
        (Method::GET, "/api/v2/status".into(), None, Role::Viewer),
        (Method::GET, "/api/v2/receivers".into(), None, Role::Viewer),
        (Method::GET, "/api/v2/alerts".into(), None, Role::Viewer),
        (
            Method::POST,
            "/api/v2/alerts".into(),
            Some(json!([{"labels": {"alertname": "FromScript"}}])),
            Role::Operator,
        ),
        (Method::GET, "/api/v2/silences".into(), None, Role::Viewer),
        (
            Method::POST,
            "/api/v2/silences".into(),
            Some(
                json!({"matchers": [{"name": "service", "value": "x", "isRegex": false}],
                "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
                "createdBy": "me", "comment": "c"}),
            ),
            Role::Operator,
        ),
        (
            Method::GET,
            "/api/v2/silence/00000000-0000-4000-8000-000000000000".into(),
            None,
            Role::Viewer,
        ),
        (
            Method::DELETE,
            "/api/v2/silence/00000000-0000-4000-8000-000000000000".into(),
            None,
            Role::Operator,
        ),
    ];
    // v1 errors are {"error": {"code", "message"}}; Alertmanager's v2 ones a JSON string.
    let message = |v: &Value| {
        v["error"]["message"]
            .as_str()
            .or(v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    for (m, path, body, need) in &routes {
        let (code, v) = api.call(m.clone(), path, None, body.clone()).await;
        assert_eq!(code, 401, "{m} {path} without credentials: {v}");
        if path.starts_with("/api/v1") {
            assert_eq!(v["error"]["code"], "unauthorized");
        } else {
            assert!(message(&v).contains("no credentials"), "{v}");
        }
        let (code, _) = api
            .call(
                m.clone(),
                path,
                Some("not-a-key-and-not-a-token"),
                body.clone(),
            )
            .await;
        assert_eq!(code, 401, "{m} {path} with a wrong key");
        for (who, role) in [
            ("viewer", Role::Viewer),
            ("ops", Role::Operator),
            ("root", Role::Admin),
        ] {
            if role < *need {
                let (code, v) = api
                    .call(m.clone(), path, Some(&token(who)), body.clone())
                    .await;
                assert_eq!(code, 403, "{m} {path} as {who}: {v}");
                assert!(message(&v).contains(need.as_str()), "{v}");
            }
        }
    }
    // With the right role, each does its job.
    let ops = token("ops");
    // The API follows the manager's KV change feed: the alerts appear within moments.
    let v = api
        .until("/api/v1/alerts?priority=p1", |v| v["count"] == 1)
        .await;
    assert_eq!(v["alerts"][0]["id"], id.as_str());
    let (code, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{id}/ack"),
            Some(&ops),
            Some(json!({"comment": "on it", "expires_in": "2h"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // The manager applied it; the API's view follows the KV change feed.
    let v = api
        .until(&format!("/api/v1/alerts/{id}"), |v| {
            v["ack"]["by"] == "key:ops"
        })
        .await;
    assert_eq!(v["ack"]["comment"], "on it");
    assert!(v["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["by"] == "key:ops"));
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/alerts?acknowledged=true",
            Some(&token("viewer")),
            None,
        )
        .await;
    assert_eq!((code, v["count"].clone()), (200, json!(1)));
    // A rule's alert cannot be resolved by hand: refused with the reason.
    let (code, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{}/resolve", other.id),
            Some(&ops),
            None,
        )
        .await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["error"]["code"], "refused");
    let (code, v) = api
        .call(Method::POST, "/api/v1/alerts/nope/ack", Some(&ops), None)
        .await;
    assert_eq!(code, 404, "{v}");
    // Silences: create, get, list, expire.
    let (code, v) = api
        .call(
            Method::POST,
            "/api/v1/silences",
            Some(&ops),
            Some(json!({"matchers": ["service=api"], "duration": "1h", "comment": "deploy"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let sid = v["result"]["silence_id"].as_str().unwrap().to_string();
    let v = api
        .until(&format!("/api/v1/silences/{sid}"), |_| true)
        .await;
    assert_eq!(v["state"], "active");
    assert_eq!(v["created_by"], "key:ops");
    let (code, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/silences/{sid}"),
            Some(&ops),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = api
        .call(Method::POST, "/api/v1/reload", Some(&token("root")), None)
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = api
        .call(Method::GET, "/api/v1/status", Some(&token("viewer")), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["manager"]["active"], true);
    // Alertmanager v2: a script posts an alert as an operator; it becomes an external alert.
    let (code, v) = api
        .call(
            Method::POST,
            "/api/v2/alerts",
            Some(&ops),
            Some(json!([{"labels": {"alertname": "FromScript", "severity": "warning"}}])),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let v = api
        .until("/api/v1/alerts?rule=FromScript", |v| v["count"] == 1)
        .await;
    assert_eq!(v["alerts"][0]["source"], "external");
    assert_eq!(v["alerts"][0]["priority"], "P3");

    // Every change is in the audit log with who made it.
    let audit = common::read_stream_filtered(&api.s.d.js, "PRISM_COMMANDS", "prism.audit.>").await;
    let by: Vec<(String, String, bool)> = audit
        .iter()
        .map(|(_, _, p)| {
            let r: Value = serde_json::from_slice(p).unwrap();
            (
                r["kind"].as_str().unwrap().into(),
                r["principal"].as_str().unwrap().into(),
                r["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    for want in [
        ("ack", "key:ops", true),
        ("resolve", "key:ops", false),
        ("ack", "key:ops", false),
        ("silence.create", "key:ops", true),
        ("silence.expire", "key:ops", true),
        ("rules.reload", "key:root", true),
        // Alertmanager v2's POST /api/v2/alerts and /api/v2/silences, as the operator.
        ("alert.external", "key:ops", true),
    ] {
        assert!(
            by.contains(&(want.0.into(), want.1.into(), want.2)),
            "{want:?} not in {by:?}"
        );
    }
    api.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_errors_are_json_that_says_what_is_wrong() {
    let mut api = start().await;
    let e = api
        .s
        .d
        .fire("disk_full", Priority::P1, &[("service", "storage")])
        .await;
    api.s.d.advance_to(5).await;
    api.ready().await;
    // A valid operator token acts under its subject.
    let t = jwt("alice", "operator", JWT_SECRET, 300);
    let (code, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{}/ack", e.id),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    // Forged (another secret), expired, and a viewer token on an operator route.
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/alerts",
            Some(&jwt("mallory", "admin", "another-secret-0123456789", 300)),
            None,
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(v["error"]["message"], "token signature invalid");
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/alerts",
            Some(&jwt("alice", "admin", JWT_SECRET, -3600)),
            None,
        )
        .await;
    assert_eq!(code, 401);
    assert_eq!(v["error"]["message"], "token expired");
    let (code, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{}/unack", e.id),
            Some(&jwt("bob", "viewer", JWT_SECRET, 300)),
            None,
        )
        .await;
    assert_eq!(code, 403);
    // No secret in any answer.
    let (_, v) = api
        .call(
            Method::GET,
            "/api/v1/alerts",
            Some("viewer-key-0123456789abcdeX"),
            None,
        )
        .await;
    assert!(!v.to_string().contains("0123456789abcde"), "{v}");
    // Errors: a malformed body names what and where; bad filters; unknown routes.
    let ops = token("ops");
    let (code, v) = api
        .call(
            Method::POST,
            "/api/v1/silences",
            Some(&ops),
            Some(json!({"matchers": ["service=api"], "duration": 5})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at duration"),
        "{v}"
    );
    let (code, v) = api
        .call(
            Method::POST,
            "/api/v1/silences",
            Some(&ops),
            Some(json!({"matchers": ["service"], "duration": "1h"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("matchers[0]"),
        "{v}"
    );
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/alerts?status=fired",
            Some(&token("viewer")),
            None,
        )
        .await;
    assert_eq!(code, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected active, all"),
        "{v}"
    );
    let (code, v) = api
        .call(Method::GET, "/api/v1/nothing", Some(&token("viewer")), None)
        .await;
    assert_eq!(
        (code, v["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    // The audit log names the token's subject.
    let audit = common::read_stream_filtered(&api.s.d.js, "PRISM_COMMANDS", "prism.cmd.ack").await;
    let c: Value = serde_json::from_slice(&audit[0].2).unwrap();
    assert_eq!(c["principal"], "jwt:alice");
    api.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_each_change_as_it_happens() {
    let mut api = start().await;
    api.ready().await;
    let (code, _) = api.call(Method::GET, "/api/v1/stream", None, None).await;
    assert_eq!(code, 401);
    let mut resp = api
        .http
        .get(format!("{}/api/v1/stream", api.base))
        .bearer_auth(token("viewer"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let e = api
        .s
        .d
        .fire("disk_full", Priority::P1, &[("service", "storage")])
        .await;
    api.s.d.advance_to(5).await;
    // Read events until the alert's record arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains(&format!("\"key\":\"{}\"", e.id)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no event for the alert: {text}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("data:") && l.contains(&e.id))
        .unwrap();
    let v: Value = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(v["kind"], "alert");
    assert_eq!(v["op"], "put");
    assert_eq!(v["value"]["rule"], "disk_full");
    assert!(text.contains("event: alert"));
    api.s.stop().await;
}

const DISK_RULES: &str = r#"
rules:
  - name: disk_high
    metric: disk_usage_percent
    condition: value > 70
    priority: P2
    labels: { team: platform }
  - name: disk_full_predicted
    metric: disk_usage_percent
    condition: value > 90
    predicted_crossing_within: 6h
    priority: P3
"#;

/// A processor and a manager on wall time, with a disk filling at 0.175 % a minute for 200
/// minutes (40 % to 75 %): the rules, routes, series and audit routes report what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_series_and_audit_report_what_the_pipeline_and_people_did() {
    let (_srv, mut cfg, js) = common::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let routing = d.join("routing.yaml");
    std::fs::write(&routing, ROUTING).unwrap();
    cfg.alerting.routing_file = routing;
    let listen = common::free_listen_addr();
    cfg.http.listen = listen.clone();
    cfg.api.keys = vec![
        key(d, "viewer", Role::Viewer),
        key(d, "ops", Role::Operator),
        key(d, "root", Role::Admin),
    ];
    let app = common::RunningApp::start_with(
        cfg,
        common::rules(DISK_RULES),
        vec![
            prismwatch::app::Component::Processor,
            prismwatch::app::Component::Manager,
        ],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Http {
        base: format!("http://{listen}"),
        http: reqwest::Client::new(),
    };
    let t0 = prismwatch::tools::clock::now_ms() - 200 * 60_000;
    let points: Vec<_> = (0..200)
        .map(|i| {
            let mut p = common::point(
                "disk_usage_percent",
                "-",
                t0 + i * 60_000,
                40.0 + 0.175 * (i + 1) as f64,
            );
            p.labels = [("service".to_string(), "db".to_string())].into();
            p
        })
        .collect();
    api.ready().await;
    common::publish(&js, &points, 50).await;

    // Status: version, uptime, NATS, the partitions this process owns and their lag.
    let st = api
        .until("/api/v1/status", |v| {
            v["processor"]["partitions"]
                .as_object()
                .is_some_and(|p| p.len() == 4)
        })
        .await;
    assert_eq!(st["nats"]["connected"], true);
    assert!(
        st["version"].is_string() && st["uptime_secs"].is_number(),
        "{st}"
    );
    for (_, p) in st["processor"]["partitions"].as_object().unwrap() {
        assert!(p["lag"].is_number(), "{st}");
    }
    // The rule fired once; its numbers add up every processor's evaluations.
    let rule = api
        .until("/api/v1/rules/disk_high", |v| {
            v["stats"]["evaluations"] == 200 && v["stats"]["firing"] == 1
        })
        .await;
    assert_eq!(rule["stats"]["firings"], 1, "{rule}");
    assert_eq!(rule["stats"]["pending"], 0);
    // 70 % is passed by the 172nd point (40 + 0.175 × 172 = 70.1).
    assert_eq!(rule["stats"]["last_fired_at"], t0 + 171 * 60_000, "{rule}");
    assert_eq!(rule["definition"]["condition"], "value > 70");
    assert_eq!(rule["file"], "test-rules.yaml");
    let all = api.until("/api/v1/rules", |_| true).await;
    let names: Vec<&str> = all["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["disk_high", "disk_full_predicted"]);
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/rules/nope",
            Some(&token("viewer")),
            None,
        )
        .await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Routes as they apply (inherited timings resolved).
    let routes = api.until("/api/v1/routes", |_| true).await;
    assert_eq!(routes["routes"][0]["receiver"], "team");
    assert_eq!(routes["routes"][0]["group_wait_ms"], 30_000);
    assert_eq!(routes["receivers"], json!(["team"]));
    let one = api.until("/api/v1/routes/0", |_| true).await;
    assert_eq!(one["group_by"], json!(["alertname"]));
    let (code, _) = api
        .call(
            Method::GET,
            "/api/v1/routes/0.7",
            Some(&token("viewer")),
            None,
        )
        .await;
    assert_eq!(code, 404);

    // The series: latest value, the detectors' view, the forecast and the predicted crossing
    // (15 % to go at 0.175 % a minute: about 86 minutes).
    let s = api
        .until(
            "/api/v1/series?metric=disk_usage_percent&labels=service=db",
            |_| true,
        )
        .await;
    assert_eq!(s["series"], r#"disk_usage_percent{service="db"}"#);
    assert!(
        (s["last"]["value"].as_f64().unwrap() - 75.0).abs() < 1e-9,
        "{s}"
    );
    assert_eq!(s["last"]["ts"], t0 + 199 * 60_000);
    let rules = s["rules"].as_array().unwrap();
    let high = rules.iter().find(|r| r["rule"] == "disk_high").unwrap();
    assert_eq!(high["phase"], "Firing");
    let pred = rules
        .iter()
        .find(|r| r["rule"] == "disk_full_predicted")
        .unwrap();
    let in_min = pred["predicted_crossing"]["in_ms"].as_f64().unwrap() / 60_000.0;
    assert!(
        (70.0..100.0).contains(&in_min),
        "crossing in {in_min} min: {pred}"
    );
    assert_eq!(pred["predicted_crossing"]["threshold"], 90.0);
    let in_1h = s["forecast"][0]["value"].as_f64().unwrap();
    assert!((80.0..91.0).contains(&in_1h), "forecast in 1 h: {s}");
    assert!(s["detectors"]["expected"].is_number(), "{s}");
    assert_eq!(
        s["detectors"]["band"].as_array().map(Vec::len),
        Some(2),
        "{s}"
    );
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/series?metric=disk_usage_percent&labels=service=nope",
            Some(&token("viewer")),
            None,
        )
        .await;
    assert_eq!(code, 404, "{v}");
    // ... and the same from the alert.
    let alerts = api
        .until("/api/v1/alerts?rule=disk_high", |v| v["count"] == 1)
        .await;
    let id = alerts["alerts"][0]["id"].as_str().unwrap().to_string();
    let from_alert = api
        .until(&format!("/api/v1/alerts/{id}/series"), |_| true)
        .await;
    assert_eq!(from_alert["series"], s["series"]);

    // Audit: an ack is recorded with who, what, when and the result; admins only.
    let before = prismwatch::tools::clock::now_ms();
    let (code, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{id}/ack"),
            Some(&token("ops")),
            Some(json!({"comment": "cleaning logs"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/audit?kind=ack&since=1h",
            Some(&token("root")),
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let r = &v["records"][0];
    assert_eq!(r["principal"], "key:ops");
    assert_eq!(r["kind"], "ack");
    assert_eq!(r["command"]["alert"], id.as_str());
    assert_eq!(r["command"]["comment"], "cleaning logs");
    assert!(r["at"].as_i64().unwrap() >= before - 1000, "{r}");
    assert_eq!(r["result"]["ok"], true, "{r}");
    let (code, _) = api
        .call(
            Method::GET,
            "/api/v1/audit?principal=key:nobody",
            Some(&token("root")),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let (code, v) = api
        .call(
            Method::GET,
            "/api/v1/audit?since=yesterday",
            Some(&token("root")),
            None,
        )
        .await;
    assert_eq!(code, 400, "{v}");
    app.stop().await.unwrap();
}

/// Keys made through the API: shown once, usable at once with their role, listed without
/// their secret, refused when they clash, stopped when deleted, audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_make_and_delete_api_keys_for_machines() {
    let api = start().await;
    api.ready().await;
    let root = token("root");
    let (code, v) = api
        .call(
            Method::POST,
            "/api/v1/keys",
            Some(&root),
            Some(json!({"name": "grafana", "role": "viewer"})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    assert!(key.len() >= 32, "{key}");
    // It works at once, with its role.
    let (code, _) = api
        .call(Method::GET, "/api/v1/alerts", Some(&key), None)
        .await;
    assert_eq!(code, 200);
    let (code, v) = api
        .call(
            Method::POST,
            "/api/v1/silences",
            Some(&key),
            Some(json!({"matchers": ["a=b"], "duration": "1h"})),
        )
        .await;
    assert_eq!(code, 403, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("key:grafana"));
    // Listed with the config's keys, no secret anywhere.
    let (code, v) = api
        .call(Method::GET, "/api/v1/keys", Some(&root), None)
        .await;
    assert_eq!(code, 200);
    let listed: Vec<(String, String)> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().into(),
                k["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(listed.contains(&("grafana".into(), "api".into())), "{v}");
    assert!(listed.contains(&("viewer".into(), "config".into())), "{v}");
    assert!(
        !v.to_string().contains(&key) && !v.to_string().contains("0123456789abcdef"),
        "{v}"
    );
    // Clashes and bad names.
    for (body, want) in [
        (json!({"name": "grafana", "role": "admin"}), 409),
        (json!({"name": "viewer", "role": "admin"}), 409),
        (json!({"name": "no spaces", "role": "viewer"}), 400),
        (json!({"name": "x", "role": "root"}), 400),
    ] {
        let (code, v) = api
            .call(
                Method::POST,
                "/api/v1/keys",
                Some(&root),
                Some(body.clone()),
            )
            .await;
        assert_eq!(code, want, "{body}: {v}");
    }
    let (code, _) = api
        .call(Method::DELETE, "/api/v1/keys/viewer", Some(&root), None)
        .await;
    assert_eq!(code, 409, "a config key is removed from the config");
    // Deleted: refused from then on.
    let (code, _) = api
        .call(Method::DELETE, "/api/v1/keys/grafana", Some(&root), None)
        .await;
    assert_eq!(code, 200);
    let (code, v) = api
        .call(Method::GET, "/api/v1/alerts", Some(&key), None)
        .await;
    assert_eq!(code, 401, "{v}");
    let (code, _) = api
        .call(Method::DELETE, "/api/v1/keys/grafana", Some(&root), None)
        .await;
    assert_eq!(code, 404);
    // Both changes are in the audit log, by whom.
    let (code, v) = api
        .call(Method::GET, "/api/v1/audit?since=1h", Some(&root), None)
        .await;
    assert_eq!(code, 200);
    let kinds: Vec<(String, String)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().into(),
                r["principal"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("key.create".into(), "key:root".into())),
        "{v}"
    );
    assert!(
        kinds.contains(&("key.delete".into(), "key:root".into())),
        "{v}"
    );
    api.s.stop().await;
}
