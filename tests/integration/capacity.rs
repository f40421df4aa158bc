//! Capacity planning against a real nats-server: a disk growing 1 % a day for a week is
//! projected 30 days on at exactly that rate, by `prismwatch capacity` and by the capacity
//! component for `GET /api/v1/capacity`; a flat series is flat.

use crate::common;

use std::time::Duration;

use prismwatch::model::MetricPoint;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn point(name: &str, service: &str, ts: i64, value: f64) -> MetricPoint {
    MetricPoint {
        name: name.into(),
        labels: [("service".to_string(), service.to_string())].into(),
        value,
        timestamp: ts,
    }
}

/// A week ending now, a point every 10 minutes: the storage disk from 50 % at 1 % a day, the
/// api-gateway's memory flat at 40 %.
fn week(now: i64) -> Vec<MetricPoint> {
    let start = now - 7 * DAY + HOUR;
    (0..7 * 144 - 6)
        .flat_map(|i| {
            let ts = start + i * 600_000;
            let days = (ts - start) as f64 / DAY as f64;
            [
                point("disk_usage_percent", "storage", ts, 50.0 + days),
                point("memory_usage_percent", "api-gateway", ts, 40.0),
            ]
        })
        .collect()
}

fn check(report: &serde_json::Value) {
    let family = |m: &str| {
        report["families"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["metric"] == m)
            .unwrap_or_else(|| panic!("no {m} in {report}"))
            .clone()
    };
    let disk = family("disk_usage_percent");
    let s = &disk["series"][0];
    assert_eq!(s["series"], r#"disk_usage_percent{service="storage"}"#);
    let growth = s["growth_per_day"].as_f64().unwrap();
    assert!((growth - 1.0).abs() < 0.01, "{s}");
    let now = s["current"].as_f64().unwrap();
    let projected = s["projected"].as_f64().unwrap();
    assert!((projected - (now + 30.0 * growth)).abs() < 1e-9, "{s}");
    let days = s["days_to_limit"].as_f64().unwrap();
    assert!((days - (100.0 - now) / growth).abs() < 1e-6, "{s}");
    // About 87 % in 30 days: past the watch share (80 %) of the limit, short of it.
    assert!((85.0..89.0).contains(&projected), "{s}");
    assert_eq!(s["status"], "watch", "{s}");
    assert_eq!(disk["status"], "watch");
    let memory = family("memory_usage_percent");
    let m = &memory["series"][0];
    assert!(m["growth_per_day"].as_f64().unwrap().abs() < 1e-9, "{m}");
    assert_eq!(m["status"], "ok");
    assert!(m["days_to_limit"].is_null());
    // Families without data say so, with no series.
    assert_eq!(family("cpu_usage_percent")["series"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_linear_growth_is_projected_by_the_cli_and_the_api() {
    let (srv, mut cfg, js) = common::fresh().await;
    let now = prismwatch::tools::clock::now_ms();
    common::publish(&js, &week(now), 50).await;

    // The command line: JSON, and the table people read.
    let url = srv.url();
    let run = move |args: &'static [&'static str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prismwatch"))
            .arg("capacity")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PRISMWATCH__NATS__URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (json, table) = tokio::task::spawn_blocking(move || (run(&["--json"]), run(&[])))
        .await
        .unwrap();
    check(&serde_json::from_str(&json).unwrap());
    assert!(
        table.contains("disk_usage_percent (limit 100 %): watch\n  watch   disk_usage_percent{service=\"storage\"}  now "),
        "{table}"
    );
    assert!(table.contains(" 1 a day, "), "{table}");

    // The component stores it; the API serves it.
    let api = common::Viewer::configure(&mut cfg);
    let app = common::RunningApp::start_with(
        cfg,
        common::test_rules(),
        vec![prismwatch::app::Component::Capacity],
    );
    common::wait_for("the stored report", Duration::from_secs(30), || async {
        api.get("/api/v1/capacity")
            .await
            .is_some_and(|(code, _)| code == 200)
    })
    .await;
    check(&api.json("/api/v1/capacity").await);
    app.stop().await.unwrap();
}
