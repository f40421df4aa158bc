//! `prismwatch detect`: offline scoring of NAB-format CSV files with the live pipeline's code.

use std::path::Path;
use std::process::Command;

fn write_series(path: &Path, spike_at: usize) {
    let mut s = String::from("timestamp,value\n");
    for i in 0..2000usize {
        let day = (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
        let wobble = ((i * 7919) % 101) as f64 / 100.0 - 0.5;
        let v = if i == spike_at {
            400.0
        } else {
            100.0 + 20.0 * day.sin() + 2.0 * wobble
        };
        let t = 1_400_000_000 + i as i64 * 300;
        s.push_str(&format!("{},{v:.3}\n", nab_time(t)));
    }
    std::fs::write(path, s).unwrap();
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time in seconds since the epoch.
fn nab_time(secs: i64) -> String {
    prismwatch::tools::tail::format_ms(secs * 1000)
}

fn detect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("detect")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn scores_every_row_flags_the_spike_once_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("series.csv");
    write_series(&input, 1500);
    let out = detect(&["--input", input.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "timestamp,value,anomaly_score,alert,raw_score,zscore,seasonal,trend,variance,iforest,drift,art"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 2000);
    let alerts: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r[3] == "1")
        .map(|(i, _)| i)
        .collect();
    assert!(alerts.contains(&1500), "alerts at {alerts:?}");
    assert!(alerts.len() <= 3, "too many alerts: {alerts:?}");
    let score: f64 = rows[1500][2].parse().unwrap();
    assert!(score >= 0.5, "spike scored {score}");
    for r in &rows {
        let s: f64 = r[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&s));
    }

    // Same input, same bytes; --output writes the same thing.
    let again = dir.path().join("again.csv");
    let out2 = detect(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        again.to_str().unwrap(),
    ]);
    assert!(out2.status.success());
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);
}

#[test]
fn a_folder_is_mirrored_under_the_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("catA")).unwrap();
    std::fs::create_dir_all(data.join("catB")).unwrap();
    write_series(&data.join("catA/one.csv"), 1200);
    write_series(&data.join("catB/two.csv"), 1700);
    let out_dir = dir.path().join("out");
    let out = detect(&[
        "--input",
        data.to_str().unwrap(),
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["catA/one.csv", "catB/two.csv"] {
        let text = std::fs::read_to_string(out_dir.join(f)).unwrap();
        assert_eq!(text.lines().count(), 2001, "{f}");
    }
    // Fresh state per file: scoring one file alone gives the same rows as within the folder.
    let alone = detect(&["--input", data.join("catB/two.csv").to_str().unwrap()]);
    assert_eq!(
        String::from_utf8(alone.stdout).unwrap(),
        std::fs::read_to_string(out_dir.join("catB/two.csv")).unwrap()
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    std::fs::write(
        &input,
        "timestamp,value\n2014-01-01 00:00:00,1\nnot a time,2\n",
    )
    .unwrap();
    let out = detect(&["--input", input.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("row 3") && err.contains("timestamp"), "{err}");
}
