//! `prismwatch silence add|query|expire`, `ack`, `alerts`, `reload`: the real binary talking to
//! the HTTP API of a running alert manager (URL and token from the environment, flags or the
//! config's `cli:` section), tables for people and `--json` for scripts.

use crate::common;

use common::manager::Scenario;
use prismwatch::api::config::{ApiKey, Role};
use prismwatch::config::secret::Secret;
use prismwatch::model::Priority;

const ROUTING: &str = r#"
route: { receiver: team, group_by: [alertname], group_wait: 30s }
receivers: [{name: team}]
"#;

fn key_text(name: &str) -> String {
    format!("{name}-key-0123456789abcdef")
}

/// Runs `prismwatch <args>` with `env`: (exit success, stdout, stderr).
async fn run(env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
            .args(&args)
            .env_remove("PRISMWATCH_API_URL")
            .env_remove("PRISMWATCH_API_TOKEN")
            .envs(env)
            .env("RUST_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_acks_and_listings_from_the_command_line() {
    let listen = common::free_listen_addr();
    let keys = tempfile::tempdir().unwrap();
    let (l, d) = (listen.clone(), keys.path().to_path_buf());
    let mut s = Scenario::start_with(ROUTING, move |cfg| {
        cfg.http.listen = l;
        cfg.api.keys = ["viewer", "ops", "root"]
            .iter()
            .zip([Role::Viewer, Role::Operator, Role::Admin])
            .map(|(n, role)| {
                let p = d.join(n);
                std::fs::write(&p, key_text(n)).unwrap();
                ApiKey {
                    name: n.to_string(),
                    role,
                    key: Secret::File(p),
                }
            })
            .collect();
    })
    .await;
    let url = format!("http://{listen}");
    let as_ = |who: &str| {
        vec![
            ("PRISMWATCH_API_URL", url.clone()),
            ("PRISMWATCH_API_TOKEN", key_text(who)),
        ]
    };
    let (ops, viewer) = (as_("ops"), as_("viewer"));
    // The API answers once it has read the manager's state.
    common::channels::eventually("the API", 20, || async {
        run(&viewer, &["silence", "query"]).await.0
    })
    .await;

    let (ok, id, err) = run(
        &ops,
        &[
            "silence",
            "add",
            "exchange=binance",
            "alertname=~cpu.*",
            "-m",
            "maintenance",
            "-d",
            "2h",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let (ok, out, err) = run(&viewer, &["silence", "query"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("ID "), "a table with a header: {out}");
    let line = out.lines().find(|l| l.starts_with(&id)).expect(&out);
    for want in [
        "exchange=\"binance\"",
        "alertname=~\"cpu.*\"",
        "active",
        "key:ops",
        "maintenance",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert_eq!(run(&viewer, &["silence", "query", "-q"]).await.1.trim(), id);
    assert_eq!(
        run(&viewer, &["silence", "query", "-q", "exchange=okx"])
            .await
            .1
            .trim(),
        "",
        "filtered by matcher"
    );
    // A viewer may not silence: the API's refusal, exit 1.
    let (ok, _, err) = run(&viewer, &["silence", "add", "exchange=okx"]).await;
    assert!(!ok && err.contains("needs operator"), "{err}");

    // A silenced alert, then acknowledged.
    let e =
        s.d.fire("cpu_high", Priority::P2, &[("exchange", "binance")])
            .await;
    s.d.advance_to(40).await;
    let want = format!("silenced by {id}");
    common::channels::eventually("the alert in the list", 20, || {
        let (v, want) = (viewer.clone(), want.clone());
        async move { run(&v, &["alerts"]).await.1.contains(&want) }
    })
    .await;
    let listed = run(&viewer, &["alerts"]).await.1;
    let row = listed.lines().find(|l| l.contains(&e.id)).expect(&listed);
    assert!(
        row.starts_with("P2") && row.contains("firing") && row.contains("cpu_high"),
        "{row}"
    );
    let (ok, out, err) = run(&ops, &["ack", &e.id, "-m", "on it"]).await;
    assert!(ok && out.contains("acknowledged"), "{out}{err}");
    common::channels::eventually("the ack in the JSON listing", 20, || {
        let v = viewer.clone();
        async move {
            let out = run(&v, &["alerts", "--json", "--acknowledged", "true"])
                .await
                .1;
            let page: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            page["alerts"][0]["ack"]["by"] == "key:ops"
                && page["alerts"][0]["ack"]["comment"] == "on it"
        }
    })
    .await;
    let (_, out, _) = run(&viewer, &["alerts", "-p", "p1"]).await;
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    // Errors: refused by the manager (exit 1, the reason), or by the parser.
    let (ok, _, err) = run(&ops, &["ack", "nope"]).await;
    assert!(!ok && err.contains("no alert \"nope\""), "{err}");
    let (ok, _, err) = run(&ops, &["silence", "add", "exchange=~.*"]).await;
    assert!(!ok && err.contains("matcher"), "{err}");
    let (ok, _, err) = run(&ops, &["silence", "add", "exchange"]).await;
    assert!(!ok && err.contains("expected name=value"), "{err}");
    // No token: the API's 401, and where to put one.
    let (ok, _, err) = run(&[("PRISMWATCH_API_URL", url.clone())], &["alerts"]).await;
    assert!(!ok && err.contains("PRISMWATCH_API_TOKEN"), "{err}");
    // Nothing listening: says where it tried.
    let (ok, _, err) = run(
        &[("PRISMWATCH_API_TOKEN", key_text("viewer"))],
        &["alerts", "--api-url", "http://127.0.0.1:9"],
    )
    .await;
    assert!(
        !ok && err.contains("cannot reach the API at http://127.0.0.1:9"),
        "{err}"
    );

    let (ok, out, err) = run(&ops, &["silence", "expire", &id]).await;
    assert!(ok && out.contains("expired"), "{out}{err}");
    common::channels::eventually("the silence to expire", 20, || {
        let v = viewer.clone();
        async move {
            run(&v, &["silence", "query", "-q"])
                .await
                .1
                .trim()
                .is_empty()
        }
    })
    .await;
    assert!(run(&viewer, &["silence", "query", "--expired"])
        .await
        .1
        .contains(&id));

    // URL and token from the config's `cli:` section.
    let cfg_file = keys.path().join("cli.yaml");
    std::fs::write(
        &cfg_file,
        format!(
            "cli:\n  api_url: {url}\n  token: {{file: {}}}\n",
            keys.path().join("root").display()
        ),
    )
    .unwrap();
    let (ok, out, err) = run(
        &[],
        &["--config", cfg_file.to_str().unwrap(), "reload", "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["message"].as_str().unwrap().contains("reload"), "{v}");
    s.stop().await;
}
