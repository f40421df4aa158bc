//! Smoke test of `prismwatch demo`: with no server at the configured URL it starts its own
//! nats-server, and alerts fire and resolve within a minute.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the demo against `url` (at most a minute): (success, stdout).
fn run_demo(url: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .args(["demo", "--speed", "400"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PRISMWATCH__NATS__URL", url)
        .env("PRISMWATCH__HTTP__LISTEN", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("demo did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.success(), out)
}

/// A server where a PrismWatch processor runs is not the demo's: it says so and runs on a
/// server of its own, and its alerts fire (they used to go to the other processor: "0 alerts").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_use_by_prismwatch_is_left_alone() {
    let (srv, cfg, js) = common::fresh().await;
    let app = common::RunningApp::start(cfg.clone(), common::test_rules());
    common::channels::eventually("the processor to join", 20, || async {
        !common::lease_owners(&js, common::GROUP).await.is_empty()
    })
    .await;
    let url = srv.url();
    let (ok, out) = tokio::task::spawn_blocking(move || run_demo(&url))
        .await
        .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("is in use by a running PrismWatch (prismwatch-processor member"),
        "{out}"
    );
    let done = out
        .lines()
        .find(|l| l.starts_with("demo done"))
        .expect(&out);
    assert!(!done.starts_with("demo done: 0 alerts"), "{done}");
    app.stop().await.unwrap();
}

#[test]
fn demo_shows_alerts_firing_and_resolving() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, out) = run_demo(&format!("nats://127.0.0.1:{unused}"));
    assert!(ok, "{out}");
    assert!(out.contains("starting a local one"), "{out}");
    for rule in [
        "exchange_disconnected",
        "memory_high",
        "disk_full",
        "cpu_high",
        "message_rate_anomaly",
        "slo_api_gateway_availability_page",
        "exchange_health_low",
        "exchange_behind_peers",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains("FIRING") && l.contains(rule)),
            "{rule} did not fire:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.contains("RESOLVED") && l.contains(rule)),
            "{rule} did not resolve:\n{out}"
        );
    }
    // The filling disk is predicted before it is full.
    let pos = |needle: &str| {
        out.lines()
            .position(|l| l.contains("FIRING") && l.contains(needle))
    };
    assert!(
        pos("disk_full_predicted").unwrap() < pos("disk_full ").unwrap(),
        "{out}"
    );
    // The SLO burn pages once, P1, and the short binance outage (6 minutes of a 99 % market-data
    // objective: burn 10 over the hour) pages no SLO.
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("FIRING") && l.contains("P1 slo_"))
            .count(),
        1,
        "{out}"
    );
    assert!(!out.contains("slo_market_data"), "{out}");
    // Exchange health: binance's drops while it is disconnected; okx's delay stands out from
    // its peers'; nobody else's.
    for (rule, exchange) in [
        ("exchange_health_low", "binance"),
        ("exchange_behind_peers", "okx"),
    ] {
        let firing: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("FIRING") && l.contains(rule))
            .collect();
        assert!(
            firing.len() == 1 && firing[0].contains(&format!("exchange={exchange},")),
            "{rule}: {firing:?}"
        );
    }
    // The 4-minute market-data delay never pages.
    assert!(
        out.lines()
            .any(|l| l.contains("cancelled") && l.contains("market_data_delay_high")),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.contains("FIRING") && l.contains("market_data_delay_high")),
        "{out}"
    );
    assert!(out.contains("demo done"), "{out}");
}
