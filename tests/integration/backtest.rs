//! `prismwatch backtest` against a real nats-server: equivalence with the live processor and
//! with file input, time ranges, subject and label filters, diff counts, and the HTML report
//! as headless Chromium renders it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use prismwatch::model::MetricPoint;
use serde_json::Value;

/// The test rules plus two: one the candidate drops, and a disk forecast it keeps.
fn baseline() -> String {
    format!("{TEST_RULES}{BASELINE_EXTRA}")
}

const BASELINE_EXTRA: &str = r#"
  - name: delay_extreme
    metric: market_data_delay_seconds
    condition: value > 8.5
    for: 1m
    priority: P4
  - name: disk_full_predicted
    metric: disk_usage_percent
    condition: value > 90
    predicted_crossing_within: 6h
    resolve_after: 10m
    priority: P3
"#;

/// md_delay waits 3 minutes instead of 5 (binance pages 2 min earlier, okx's 4-minute
/// excursion now pages), rate_anomaly pages as P1, delay_extreme is gone; the disk forecast
/// is the same.
const CANDIDATE: &str = r#"
rules:
  - name: md_delay
    metric: market_data_delay_seconds
    condition: value > 5
    for: 3m
    resolve_after: 30s
    priority: P2
  - name: rate_anomaly
    metric: exchange_message_rate
    condition: score >= 0.8
    resolve_after: 1m
    priority: P1
  - name: disk_full_predicted
    metric: disk_usage_percent
    condition: value > 90
    predicted_crossing_within: 6h
    resolve_after: 10m
    priority: P3
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The scenario plus a disk filling steadily from 60 % to 95 % over its two hours.
fn with_disk() -> Vec<MetricPoint> {
    let mut out = Vec::new();
    for (i, tick) in scenario().chunks(3).enumerate() {
        out.extend_from_slice(tick);
        let mut p = point("disk_usage_percent", "", tick[0].timestamp, 0.0);
        p.labels.clear();
        p.labels.insert("service".into(), "storage".into());
        p.value = 60.0 + 35.0 * i as f64 / 720.0 + ((i * 7919) % 13) as f64 * 0.01;
        out.push(p);
    }
    out
}

fn jsonl(points: &[MetricPoint]) -> String {
    points
        .iter()
        .map(|p| serde_json::to_string(p).unwrap() + "\n")
        .collect()
}

/// Runs `prismwatch backtest ARGS` against `url`; returns (stdout, stderr).
async fn backtest(url: &str, args: &[&str]) -> (String, String) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_prismwatch"))
            .arg("backtest")
            .args(&args)
            .envs(env_for(&url))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "backtest {args:?}: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    })
    .await
    .unwrap()
}

async fn report(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--quiet", "--json", "-"];
    all.extend_from_slice(args);
    serde_json::from_str(&backtest(url, &all).await.0).unwrap()
}

/// (rule, series label `exchange`, fired?) of a variant's alerts.
fn alerts(v: &Value) -> Vec<(String, String, bool)> {
    let mut out: Vec<_> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_string(),
                a["labels"]["exchange"].as_str().unwrap_or("").to_string(),
                !a["fired_at"].is_null(),
            )
        })
        .collect();
    out.sort();
    out
}

fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_gives_the_live_processors_events_byte_for_byte_and_so_does_the_file() {
    let (srv, cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "rules.yaml", TEST_RULES);
    let data = write(dir.path(), "points.jsonl", &jsonl(&scenario()));
    publish(&js, &scenario(), 3).await;
    process_all(&cfg, test_rules()).await;
    // What the live processor published, payload bytes as stored.
    let live: Vec<String> = read_stream(&js, "PRISM_ALERTS")
        .await
        .into_iter()
        .map(|(_, _, p)| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    assert_eq!(live.len(), 7);

    let out = dir.path().join("events.jsonl");
    let rules = rules.to_str().unwrap();
    let (_, said) = backtest(
        &srv.url(),
        &["--rules", rules, "--events", out.to_str().unwrap()],
    )
    .await;
    let replayed = std::fs::read_to_string(&out).unwrap();
    // Partitions publish independently, so the order across them differs: compare as sets
    // of lines, every byte included.
    assert_eq!(lines(&replayed), {
        let mut l = live.clone();
        l.sort();
        l
    });
    // Progress goes to stderr as plain lines when it is not a terminal.
    assert!(
        said.contains("backtest: ") && said.contains("points/s"),
        "{said}"
    );

    // The same history from the file `publish --file --batch 3` would send: the same events,
    // no NATS server involved.
    let from_file = dir.path().join("from-file.jsonl");
    backtest(
        "nats://127.0.0.1:1",
        &[
            "--quiet",
            "--input",
            data.to_str().unwrap(),
            "--batch",
            "3",
            "--rules",
            rules,
            "--events",
            from_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        lines(&std::fs::read_to_string(&from_file).unwrap()),
        lines(&replayed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_ranges_subjects_and_labels_select_what_is_backtested() {
    let (srv, _cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "rules.yaml", TEST_RULES);
    let rules = rules.to_str().unwrap();
    let points = scenario();
    // The first half holds binance's excursion, the second okx's and deribit's spike.
    let (first, second) = points.split_at(points.len() / 2);
    // One point per message, so that each is on its own series' subject.
    publish(&js, first, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mid = prismwatch::tools::clock::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    publish(&js, second, 1).await;
    let mid = time::OffsetDateTime::from_unix_timestamp_nanos(mid as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();

    let all = report(&srv.url(), &["--rules", rules]).await;
    assert_eq!(
        alerts(&all["variants"][0]),
        [
            ("md_delay".into(), "binance".into(), true),
            ("md_delay".into(), "okx".into(), false),
            ("rate_anomaly".into(), "deribit".into(), true),
        ]
    );
    assert_eq!(all["variants"][0]["summary"]["pages"], 2);
    assert_eq!(all["variants"][0]["summary"]["pending_only"], 1);
    assert_eq!(all["points"], 720 * 3);

    let before = report(&srv.url(), &["--rules", rules, "--to", &mid]).await;
    assert_eq!(
        alerts(&before["variants"][0]),
        [("md_delay".into(), "binance".into(), true)]
    );
    assert_eq!(before["points"], 360 * 3);
    let after = report(&srv.url(), &["--rules", rules, "--from", &mid]).await;
    let after_alerts = alerts(&after["variants"][0]);
    assert!(after_alerts.contains(&("md_delay".into(), "okx".into(), false)));
    assert!(
        after_alerts.iter().all(|a| a.1 != "binance"),
        "{after_alerts:?}"
    );
    assert_eq!(after["points"], 360 * 3);
    let recent = report(&srv.url(), &["--rules", rules, "--since", "1h"]).await;
    assert_eq!(recent["points"], all["points"]);

    // Subjects: only binance's metrics are read (and the partitions' ticks).
    let binance = report(
        &srv.url(),
        &[
            "--rules",
            rules,
            "--subject",
            "prism.metrics.exchange.binance.>",
        ],
    )
    .await;
    assert_eq!(
        alerts(&binance["variants"][0]),
        [("md_delay".into(), "binance".into(), true)]
    );
    assert_eq!(binance["points"], 720);
    let delays = report(
        &srv.url(),
        &[
            "--rules",
            rules,
            "--subject",
            "exchange.*.market_data_delay_seconds",
        ],
    )
    .await;
    assert_eq!(delays["points"], 720 * 2);

    // Labels (alertname and priority included): every point is run, only matching alerts kept.
    let okx = report(
        &srv.url(),
        &["--rules", rules, "--match", "exchange=\"okx\""],
    )
    .await;
    assert_eq!(
        alerts(&okx["variants"][0]),
        [("md_delay".into(), "okx".into(), false)]
    );
    assert_eq!(okx["points"], 720 * 3);
    let p3 = report(
        &srv.url(),
        &["--rules", rules, "--match", "priority=~\"P3|P4\""],
    )
    .await;
    assert_eq!(
        alerts(&p3["variants"][0]),
        [("rate_anomaly".into(), "deribit".into(), true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_counts_pages_added_removed_moved_and_reprioritised() {
    let (srv, _cfg, js) = fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "baseline.yaml", &baseline());
    let cand = write(dir.path(), "candidate.yaml", CANDIDATE);
    publish(&js, &with_disk(), 1).await;
    let html = dir.path().join("report.html");
    let r = report(
        &srv.url(),
        &[
            "--rules",
            base.to_str().unwrap(),
            "--candidate-rules",
            cand.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    )
    .await;
    let d = &r["diff"];
    let rules_of = |k: &str| -> Vec<String> {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["rule"].as_str().unwrap(),
                    a["series"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        rules_of("added"),
        ["md_delay market_data_delay_seconds{exchange=\"okx\"}"]
    );
    assert_eq!(
        rules_of("removed"),
        [
            "delay_extreme market_data_delay_seconds{exchange=\"binance\"}",
            "delay_extreme market_data_delay_seconds{exchange=\"okx\"}"
        ]
    );
    assert_eq!(rules_of("earlier").len(), 1);
    assert_eq!(d["earlier"][0]["by_ms"], -120_000);
    assert_eq!(d["later"].as_array().unwrap().len(), 0);
    assert_eq!(d["priority_changed"][0]["rule"], "rate_anomaly");
    assert_eq!(d["priority_changed"][0]["baseline"], "P3");
    assert_eq!(d["priority_changed"][0]["candidate"], "P1");
    // The disk forecast pages the same in both.
    let disk = d["pages_per_rule"]["disk_full_predicted"].clone();
    assert!(
        disk[0].as_u64().unwrap() >= 1 && disk[0] == disk[1],
        "{disk}"
    );
    assert_eq!(d["unchanged"], disk[0]);
    let disk = disk[0].as_u64().unwrap();
    assert_eq!(d["pages_per_rule"]["md_delay"], serde_json::json!([1, 2]));
    assert_eq!(
        d["pages_per_rule"]["delay_extreme"],
        serde_json::json!([2, 0])
    );

    // Pages per day, priority and receiver (the shipped routing: P1 also to DingTalk, P1 and
    // P2 to email, everything to Slack).
    let (b, c) = (&r["variants"][0]["summary"], &r["variants"][1]["summary"]);
    assert_eq!(
        (b["pages"].as_u64(), c["pages"].as_u64()),
        (Some(4 + disk), Some(3 + disk))
    );
    let day = "2025-11-24";
    assert_eq!(b["pages_per_day"][day], 4 + disk);
    assert_eq!(c["per_rule"]["md_delay"]["pages_per_day"][day], 2);
    assert_eq!(b["per_priority"]["P4"][day], 2);
    assert_eq!(c["per_priority"]["P1"][day], 1);
    assert_eq!(b["per_receiver"]["email-oncall"][day], 1);
    assert_eq!(c["per_receiver"]["email-oncall"][day], 3);
    assert_eq!(c["per_receiver"]["dingtalk-oncall"][day], 1);
    assert!(b["per_receiver"].get("dingtalk-oncall").is_none());
    assert_eq!(b["per_receiver"]["slack-alerts"][day], 4 + disk);
    assert_eq!(c["noisiest"][0], serde_json::json!(["md_delay", 2]));
    let pages = (4 + disk, 3 + disk);

    // The report, as a browser shows it.
    let Some(chromium) = chromium() else {
        return;
    };
    let dom = tokio::task::spawn_blocking(move || render(&chromium, &html))
        .await
        .unwrap();
    check_report_dom(&dom, pages);
}

/// Headless Chromium, when installed (required when PRISMWATCH_REQUIRE_CHROMIUM is set, as
/// `.ci/run` does).
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("PRISMWATCH_REQUIRE_CHROMIUM").is_none(),
            "chromium is required (PRISMWATCH_REQUIRE_CHROMIUM) but not installed: apt-get install chromium"
        );
        eprintln!("chromium not installed: the report's DOM check is skipped");
    }
    found
}

/// The DOM Chromium builds from the page (a screenshot beside it for people).
fn render(chromium: &Path, html: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let args = |extra: &[String]| {
        let mut a = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--allow-file-access-from-files".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        a.extend_from_slice(extra);
        a.push(format!("file://{}", html.display()));
        a
    };
    let out = Command::new(chromium)
        .args(args(&["--dump-dom".into()]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(shot) = std::env::var("PRISMWATCH_REPORT_SCREENSHOT") {
        let _ = Command::new(chromium)
            .args(args(&[
                format!("--screenshot={shot}"),
                "--window-size=1280,2400".into(),
            ]))
            .output();
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_report_dom(dom: &str, pages: (u64, u64)) {
    // Summary: pages per variant, by priority.
    let row = |variant: &str| -> String {
        let start = dom
            .find(&format!("<tr data-variant=\"{variant}\">"))
            .unwrap_or_else(|| panic!("no summary row for {variant}"));
        dom[start..start + dom[start..].find("</tr>").unwrap()].to_string()
    };
    assert!(
        row("baseline").contains(&format!("<td class=\"pages\">{}</td>", pages.0)),
        "{}",
        row("baseline")
    );
    assert!(row("candidate").contains(&format!("<td class=\"pages\">{}</td>", pages.1)));
    assert!(row("candidate").contains("<td data-priority=\"P1\">1</td>"));
    // The diff's counts.
    for (kind, n) in [
        ("added", 1),
        ("removed", 2),
        ("earlier", 1),
        ("later", 0),
        ("priority_changed", 1),
    ] {
        assert!(
            dom.contains(&format!("<tr data-kind=\"{kind}\"><td>")) && {
                let at = dom.find(&format!("<tr data-kind=\"{kind}\">")).unwrap();
                dom[at..]
                    .split("</tr>")
                    .next()
                    .unwrap()
                    .ends_with(&format!("<td>{n}</td>"))
            },
            "diff row {kind} != {n}"
        );
    }
    assert!(dom.contains("<td>md_delay</td><td>1</td><td class=\"more\">2</td>"));
    // One plotted section per alerted series, each with an SVG holding the value line, the
    // alert spans and axis labels.
    let sections: Vec<&str> = dom.split("<section class=\"series\"").skip(1).collect();
    assert_eq!(sections.len(), 4, "binance, okx, deribit and the disk");
    for s in &sections {
        let svg = &s[s.find("<svg").expect("an svg")..s.find("</svg>").unwrap()];
        assert!(svg.contains("<polyline"), "a value line");
        assert!(
            svg.matches("<rect").count() >= 3,
            "background and alert spans"
        );
        assert!(svg.contains("<text"), "axis labels");
    }
    let deribit = sections
        .iter()
        .find(|s| s.contains("exchange_message_rate"))
        .unwrap();
    assert!(deribit.contains("data-rule=\"rate_anomaly\""));
    // The detectors' band is drawn for the anomaly-scored series.
    assert!(deribit.contains("<polygon"), "a detector band");
    // The disk's plot shows the forecasts (orange) of its predictive rule; the others do not.
    let forecast = "stroke=\"#D9822B\"";
    let disk = sections
        .iter()
        .find(|s| s.contains("disk_usage_percent"))
        .unwrap();
    assert!(disk.contains(forecast), "forecasts on the disk's plot");
    assert!(!deribit.contains(forecast));
    // Self-contained: nothing to fetch, nothing to run.
    for outside in ["<script", "<link", " src=", "<img"] {
        assert!(!dom.contains(outside), "the report holds {outside}");
    }
}
