//! `prismwatch silence add|query|expire`, `ack`, `alerts`, `reload`: the real binary against a
//! running alert manager.

mod common;

use common::manager::Scenario;
use prismwatch::model::Priority;

const ROUTING: &str = r#"
route: { receiver: team, group_by: [alertname], group_wait: 30s }
receivers: [{name: team}]
"#;

/// Runs `prismwatch <args>` against `url`: (exit success, stdout, stderr).
async fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
            .args(&args)
            .env("PRISMWATCH__NATS__URL", url)
            .env("RUST_LOG", "warn")
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
    let mut s = Scenario::start(ROUTING, |_| {}).await;
    let url = s.srv.url();

    let (ok, id, err) = cli(
        &url,
        &[
            "silence",
            "add",
            "exchange=binance",
            "alertname=~cpu.*",
            "-m",
            "maintenance",
            "-d",
            "2h",
            "-a",
            "alice",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let (ok, out, err) = cli(&url, &["silence", "query"]).await;
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with(&id)).expect(&out);
    for want in [
        "exchange=\"binance\"",
        "alertname=~\"cpu.*\"",
        "active",
        "cli:alice",
        "maintenance",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert_eq!(cli(&url, &["silence", "query", "-q"]).await.1.trim(), id);
    assert_eq!(
        cli(&url, &["silence", "query", "-q", "exchange=okx"])
            .await
            .1
            .trim(),
        "",
        "filtered by matcher"
    );

    // A silenced alert, then acknowledged.
    let e =
        s.d.fire("cpu_high", Priority::P2, &[("exchange", "binance")])
            .await;
    s.d.advance_to(40).await;
    let (_, out, _) = cli(&url, &["alerts"]).await;
    assert!(
        out.contains("P2 firing")
            && out.contains(&e.id)
            && out.contains(&format!("silenced by {id}")),
        "{out}"
    );
    let (ok, out, err) = cli(&url, &["ack", &e.id, "-m", "on it", "-a", "bob"]).await;
    assert!(ok && out.contains("acknowledged"), "{out}{err}");
    let (_, out, _) = cli(&url, &["alerts", "--json"]).await;
    let a: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(a["ack"]["by"], "cli:bob");
    assert_eq!(a["ack"]["comment"], "on it");

    // Errors: refused by the manager (exit 1, the reason), or by the parser.
    let (ok, _, err) = cli(&url, &["ack", "nope"]).await;
    assert!(!ok && err.contains("no alert \"nope\""), "{err}");
    let (ok, _, err) = cli(&url, &["silence", "add", "exchange=~.*"]).await;
    assert!(!ok && err.contains("matcher"), "{err}");
    let (ok, _, err) = cli(&url, &["silence", "add", "exchange"]).await;
    assert!(!ok && err.contains("expected name=value"), "{err}");

    let (ok, out, err) = cli(&url, &["silence", "expire", &id]).await;
    assert!(ok && out.contains("expired"), "{out}{err}");
    assert_eq!(cli(&url, &["silence", "query", "-q"]).await.1.trim(), "");
    assert!(cli(&url, &["silence", "query", "--expired"])
        .await
        .1
        .contains(&id));

    let (ok, out, err) = cli(&url, &["reload"]).await;
    assert!(ok && out.contains("reloaded"), "{out}{err}");
    s.stop().await;
}
