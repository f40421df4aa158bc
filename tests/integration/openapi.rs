//! The OpenAPI document against the running API: `schemathesis` (PyPI; `.ci/run` installs it in
//! the test venv) generates requests for every operation from `/api/v1/openapi.json` (valid and
//! invalid ones) and checks that no answer is a 5xx and that every answer matches the schema
//! (status code, content type and body). A processor and an alert manager run behind it, with
//! alerts and a silence to read.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::channels::eventually;
use common::RunningApp;
use prismwatch::api::config::{ApiKey, Role};
use prismwatch::app::Component;
use prismwatch::config::secret::Secret;
use serde_json::Value;

/// `schemathesis` beside the test venv's Python (`target/pyvenv`, or `$PRISMWATCH_TEST_PYTHON`).
fn schemathesis() -> PathBuf {
    let bin = common::channels::python().with_file_name("schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run .ci/run, or: target/pyvenv/bin/pip install schemathesis==4.32.5",
        bin.display()
    );
    bin
}

const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let bin = schemathesis();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_srv, mut cfg, js) = common::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let routing = d.join("routing.yaml");
    std::fs::write(
        &routing,
        "route: {receiver: team, group_by: [alertname]}\nreceivers: [{name: team}]\n",
    )
    .unwrap();
    cfg.alerting.routing_file = routing;
    let listen = common::free_listen_addr();
    cfg.http.listen = listen.clone();
    let key = d.join("admin.key");
    std::fs::write(&key, ADMIN_KEY).unwrap();
    cfg.api.keys = vec![ApiKey {
        name: "fuzzer".into(),
        role: Role::Admin,
        key: Secret::File(key),
    }];
    cfg.api.rate_limit_per_second = 0;
    let app = RunningApp::start_with(
        cfg,
        common::test_rules(),
        vec![Component::Processor, Component::Manager],
    );
    common::publish(&js, &common::scenario(), 100).await;
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    eventually("alerts to list", 60, || async {
        let r = client
            .get(format!("{base}/api/v1/alerts?status=all"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => r
                .json::<Value>()
                .await
                .is_ok_and(|v| v["count"].as_u64().unwrap_or(0) > 0),
            _ => false,
        }
    })
    .await;
    let doc = client
        .get(format!("{base}/api/v1/openapi.json"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = d.join("openapi.json");
    std::fs::write(&spec, &doc).unwrap();

    // Real identifiers, so the generated requests also reach past "not found".
    let alerts: Value = client
        .get(format!("{base}/api/v1/alerts?status=all"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alert_id = alerts["alerts"][0]["id"].as_str().unwrap().to_string();
    let made: Value = client
        .post(format!("{base}/api/v1/silences"))
        .bearer_auth(ADMIN_KEY)
        .json(
            &serde_json::json!({"matchers": ["exchange=okx"], "duration": "2h", "comment": "fuzz"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let silence_id = made["result"]["silence_id"].as_str().unwrap().to_string();
    std::fs::write(
        d.join("schemathesis.toml"),
        format!(
            r#"[[operations]]
include-path-regex = '^/api/v1/alerts/[{{]id[}}]'
parameters = {{ "path.id" = "{alert_id}" }}

[[operations]]
include-path-regex = '^/api/v(1/silences|2/silence)/[{{]id[}}]'
parameters = {{ "path.id" = "{silence_id}" }}

[[operations]]
include-path = "/api/v1/rules/{{name}}"
parameters = {{ "path.name" = "exchange_latency_high" }}

[[operations]]
include-path = "/api/v1/routes/{{path}}"
parameters = {{ "path.path" = "0" }}

[[operations]]
include-path = "/api/v1/series"
parameters = {{ "query.metric" = "market_data_delay_seconds", "query.labels" = "exchange=binance" }}
"#
        ),
    )
    .unwrap();

    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(&bin)
            .arg("run")
            .arg(&spec)
            .args(["--url", &base])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_KEY}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            // The event stream never ends by design.
            .args(["--exclude-path", "/api/v1/stream"])
            .args(["--max-examples", "25", "--seed", "20261129", "--workers", "2"])
            .args(["--request-timeout", "20", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(d)
            .output(),
    )
    .await
    .expect("schemathesis finishes within 10 minutes")
    .expect("schemathesis starts");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    // It did test the operations (not an empty run).
    assert!(report.contains("/api/v1/alerts"), "{report}");
    eprintln!("{report}");
    app.stop().await.unwrap();
}
