//! The first hour as a user, through the real binary and its printed text: it runs from any
//! folder on its built-in config, rules and routing; errors name the file, key or variable once,
//! in plain words; invalid flags are refused up front; `publish` refuses what the processor
//! would drop and warns of late points; the tools print their data, not the NATS client's logs;
//! every flag is described.

use crate::common;

use std::process::Command;

/// `prismwatch <args>` in `dir` with `env`: (success, stdout, stderr).
fn run_in(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prismwatch"))
        .args(args)
        .current_dir(dir)
        .env_remove("PRISMWATCH_CONFIG")
        .env_remove("RUST_LOG")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn runs_from_any_folder_and_says_which_config_it_uses() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run_in(dir.path(), &[], &["check-config"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(
            "config: built-in defaults (no file given, and none at config/prismwatch.yaml, "
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "rules: 65 from <built-in>/rules/health.yaml, <built-in>/rules/marketprism.yaml, <built-in>/rules/predictions.yaml, <built-in>/rules/slos.yaml"
        ),
        "{out}"
    );
    // SLOs in one line each, not their 27 generated rules.
    assert!(
        out.contains("  slo market_data            availability 99 %, errors 99.5 %, latency 99 % per exchange; 9 burn-rate rules (page P1, page_slow P2, ticket P3)\n"),
        "{out}"
    );
    assert!(!out.contains("slo_api_gateway_latency_page "), "{out}");
    assert!(out.contains("routing: <built-in>/routing.yaml"), "{out}");
    // Durations as people write them, and the predictive rule with its horizon.
    assert!(
        out.contains("memory_high                P2  value > 85 for 5m\n"),
        "{out}"
    );
    assert!(
        out.contains("disk_full_predicted        value > 90, or predicted within: P1 6h00m, P2 1d0h, P3 3d0h, P4 7d0h\n"),
        "{out}"
    );
    // A config in $XDG_CONFIG_HOME/prismwatch is found, and named.
    let xdg = dir.path().join("xdg/prismwatch");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(xdg.join("prismwatch.yaml"), "ingest:\n  max_batch: 50\n").unwrap();
    let (ok, out, _) = run_in(dir.path(), &[], &["check-config"]);
    assert!(ok);
    assert!(
        out.starts_with(&format!(
            "config: {}",
            xdg.join("prismwatch.yaml").display()
        )),
        "{out}"
    );
}

#[test]
fn errors_name_the_place_once_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A missing file: its cause once.
    let (ok, _, err) = run_in(d, &[], &["check-config", "--config", "nope.yaml"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: nope.yaml: cannot read: it does not exist"
    );
    // A bad value from a variable is the variable's; no Rust type names.
    let (ok, _, err) = run_in(d, &[("PRISMWATCH__NATS__URL", "htp:/x")], &["check-config"]);
    assert!(
        !ok && err.contains(
            "environment variable PRISMWATCH__NATS__URL: nats.url: \"htp:/x\" is not a NATS URL"
        ),
        "{err}"
    );
    let (ok, _, err) = run_in(
        d,
        &[("PRISMWATCH__INGEST__MAX_BATCH", "lots")],
        &["check-config"],
    );
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: environment variable PRISMWATCH__INGEST__MAX_BATCH: ingest.max_batch: got the text \"lots\", expected a whole number"
    );
    // Priorities in any case; an empty rules folder is an error unless asked for.
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(
        d.join("rules/a.yaml"),
        "rules:\n  - {name: x, metric: m, condition: value > 1, priority: p1}\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();
    let cfg = |rules: &str, extra: &str| {
        let f = d.join(format!("{rules}.yaml"));
        std::fs::write(
            &f,
            format!("rules:\n  paths: [{}]\n{extra}", d.join(rules).display()),
        )
        .unwrap();
        f
    };
    let (ok, out, err) = run_in(
        d,
        &[],
        &[
            "check-config",
            "--config",
            cfg("rules", "").to_str().unwrap(),
        ],
    );
    assert!(
        ok && out.contains("  x                          P1  value > 1"),
        "{out}{err}"
    );
    let (ok, _, err) = run_in(
        d,
        &[],
        &[
            "check-config",
            "--config",
            cfg("empty", "").to_str().unwrap(),
        ],
    );
    assert!(
        !ok && err.contains("rules.paths: no rule found in")
            && err.contains("rules.allow_empty: true"),
        "{err}"
    );
    let (ok, _, _) = run_in(
        d,
        &[],
        &[
            "check-config",
            "--config",
            cfg("empty", "  allow_empty: true\n").to_str().unwrap(),
        ],
    );
    assert!(ok);
    // Invalid CLI values are refused before anything waits.
    let (ok, _, err) = run_in(d, &[], &["tail", "--status", "fired"]);
    assert!(
        !ok && err.contains("invalid value 'fired' for '--status <STATUS>'"),
        "{err}"
    );
}

#[test]
fn publish_refuses_what_the_processor_would_drop_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No server needed: nothing is sent.
    let no_server = [("PRISMWATCH__NATS__URL", "nats://127.0.0.1:9")];
    for (args, want) in [
        (vec!["--name", "disk usage%", "--value", "1"], "invalid_name: invalid metric name \"disk usage%\""),
        (vec!["--name", "x", "--value", "NaN"], "non_finite_value"),
        (vec!["--name", "x", "--value", "inf"], "non_finite_value"),
        (
            vec!["--name", "x", "--value", "1", "--timestamp", "1764410400"],
            "looks like seconds since the epoch (as milliseconds it is in 1970): add --timestamp-unit s",
        ),
        (
            vec!["--name", "x", "--value", "1", "--timestamp", "yesterday"],
            "neither a number (milliseconds) nor a time like 2026-11-29T10:00:00Z",
        ),
    ] {
        let mut all = vec!["publish"];
        all.extend(args.iter());
        let (ok, out, err) = run_in(d, &no_server, &all);
        assert!(!ok && err.contains(want), "{args:?}: {out}{err}");
        assert!(!err.contains("cannot connect"), "refused before connecting: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_warns_of_late_points_and_the_tools_print_only_their_data() {
    let srv = common::server();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let now_s = prismwatch::tools::clock::now_ms() / 1000;
    std::fs::write(
        d.join("p.csv"),
        format!(
            "timestamp,name,value,host\n{},cpu,5,a\n{},cpu,6,a\n",
            now_s - 600,
            now_s - 590
        ),
    )
    .unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let (d, url) = (d.clone(), url.clone());
        move || {
            run_in(
                &d,
                &[("PRISMWATCH__NATS__URL", &url)],
                &["publish", "--file", "p.csv", "--timestamp-unit", "s"],
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "published 2 points in 2 messages");
    // The warning, and nothing else on stderr (no NATS client log lines, no colours).
    assert!(err.starts_with("warning: 2 of 2 points are more than ingest.allowed_lateness_ms (5000 ms) old (the oldest by 10m"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
    // An RFC 3339 timestamp is taken.
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run_in(
            &d,
            &[("PRISMWATCH__NATS__URL", &url)],
            &[
                "publish",
                "--name",
                "cpu",
                "-l",
                "host=a",
                "--value",
                "7",
                "--timestamp",
                &ts,
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        ok && out.trim() == "published 1 points in 1 messages" && err.is_empty(),
        "{out}{err}"
    );
}

/// Every flag of every command has a description.
#[test]
fn every_flag_is_described() {
    let dir = tempfile::tempdir().unwrap();
    let (_, top, _) = run_in(dir.path(), &[], &["--help"]);
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 10, "{top}");
    let subcommands = [
        "silence add",
        "silence query",
        "silence expire",
        "notify test",
        "notify retry",
    ];
    for c in commands.iter().map(String::as_str).chain(subcommands) {
        let mut args: Vec<&str> = c.split(' ').collect();
        args.push("--help");
        let (ok, help, _) = run_in(dir.path(), &[], &args);
        assert!(ok, "{c}");
        for l in help.lines().filter(|l| l.trim_start().starts_with('-')) {
            // "  -x, --flag <V>  Description": a flag line with text after the flag itself.
            let described = l
                .trim()
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            let continued = help
                .lines()
                .skip_while(|x| *x != l)
                .nth(1)
                .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
            assert!(described || continued, "{c}: undescribed flag: {l}\n{help}");
        }
    }
}
