//! The HTTP API against a real nats-server and a running alert manager: the authorisation
//! matrix of every route (401 without credentials, 403 with too small a role, success with
//! the right one), forged and expired tokens, the audit trail of every change, JSON errors.

mod common;

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

struct Api {
    s: Scenario,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
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
        base: format!("http://{listen}"),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Api {
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
        let resp = r.send().await.unwrap();
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
    ];
    for (m, path, body, need) in &routes {
        let (code, v) = api.call(m.clone(), path, None, body.clone()).await;
        assert_eq!(code, 401, "{m} {path} without credentials: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
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
                assert!(v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(need.as_str()));
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
