//! The `prismwatch` binary: parse the command line, initialise logs, call into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use async_nats::jetstream;
use clap::{Parser, Subcommand, ValueEnum};
use prismwatch::app::{self, Component};
use prismwatch::backtest;
use prismwatch::config::{self, Loaded};
use prismwatch::ingest::Encoding;
use prismwatch::model::MetricPoint;
use prismwatch::processor::replay;
use prismwatch::rules::{fmt_duration_ms, RuleSet};
use prismwatch::tools::manage::{self, SilenceAdd};
use prismwatch::tools::{clock, demo, detect, publish, tail};
use prismwatch::{bus, telemetry};
use tokio_util::sync::CancellationToken;

// Per-point work allocates small keys and vectors; mimalloc halves what glibc malloc costs here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "prismwatch",
    version,
    about = "Streaming monitoring and alerting for market-data platforms (NATS-native)"
)]
struct Cli {
    /// Config file (YAML). Default: the first of ./config/prismwatch.yaml,
    /// $XDG_CONFIG_HOME/prismwatch/prismwatch.yaml (~/.config/...), /etc/prismwatch/prismwatch.yaml;
    /// else built-in defaults (with the built-in rules and routing).
    #[arg(long, short, global = true, env = "PRISMWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Show the tools' logs (NATS client, connections); `run` always logs.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Msgpack,
}

/// A range of PRISM_METRICS: by store time, or by stream sequence.
#[derive(clap::Args)]
struct RangeArgs {
    /// Only the messages stored in the last this long (e.g. 24h, 7d); instead of --from.
    #[arg(long, conflicts_with_all = ["from", "from_seq"])]
    since: Option<String>,
    /// Only the messages stored at or after this time (RFC 3339, e.g. 2026-11-20T00:00:00Z).
    #[arg(long, conflicts_with = "from_seq")]
    from: Option<String>,
    /// Only the messages stored at or before this time (RFC 3339).
    #[arg(long, conflicts_with = "to_seq")]
    to: Option<String>,
    /// First sequence of PRISM_METRICS (`nats stream info PRISM_METRICS` shows the range).
    #[arg(long, default_value_t = 1)]
    from_seq: u64,
    /// Last sequence, inclusive (default: the stream's last).
    #[arg(long)]
    to_seq: Option<u64>,
}

impl RangeArgs {
    /// The time range (ms since the epoch) --since, --from and --to give.
    fn times(&self) -> anyhow::Result<backtest::TimeRange> {
        let time = |field: &str, v: &str| {
            publish::parse_timestamp(v, publish::TimestampUnit::Ms)
                .map_err(|e| anyhow::anyhow!("--{field}: {e}"))
        };
        let from = match (&self.since, &self.from) {
            (Some(d), _) => Some(
                clock::now_ms()
                    - humantime::parse_duration(d)
                        .map_err(|e| anyhow::anyhow!("--since {d:?}: {e} (e.g. 24h, 7d)"))?
                        .as_millis() as i64,
            ),
            (None, Some(f)) => Some(time("from", f)?),
            (None, None) => None,
        };
        let to = self.to.as_deref().map(|t| time("to", t)).transpose()?;
        Ok(backtest::TimeRange { from, to })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run PrismWatch: the processor (metrics in, alert events out), the alert manager and the
    /// HTTP listener. Any number of processes may run: they share the partitions of the metrics
    /// stream, and one alert manager is active while the others stand by. SIGHUP reloads the
    /// rules and routes.
    #[command(
        after_help = "Examples:\n  prismwatch run\n  prismwatch run --only processor        # scale-out: more processors share the partitions\n  prismwatch --config /etc/prismwatch/prismwatch.yaml run --only manager --only notify"
    )]
    Run {
        /// Run only these components (repeatable); default: all of them.
        #[arg(long, value_enum)]
        only: Vec<Component>,
    },
    /// Publish metric points (one from flags, or a CSV / JSON-lines file), checked first as the
    /// processor will check them.
    #[command(
        after_help = "Examples:\n  prismwatch publish --name disk_usage_percent -l service=db --value 93\n  prismwatch publish --name exchange_connection_status -l exchange=binance --value 0 --timestamp 2026-11-29T10:00:00Z\n  prismwatch publish --file points.csv --timestamp-unit s --batch 100"
    )]
    Publish {
        /// Metric name.
        #[arg(long, required_unless_present = "file")]
        name: Option<String>,
        /// Label as key=value (repeatable).
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
        /// Value.
        #[arg(long, required_unless_present = "file", allow_hyphen_values = true)]
        value: Option<f64>,
        /// Event time (default: now): a number in --timestamp-unit, or RFC 3339 like
        /// 2026-11-29T10:00:00Z. Points older than ingest.allowed_lateness_ms are dropped as
        /// late: publish them as they happen.
        #[arg(long, allow_hyphen_values = true)]
        timestamp: Option<String>,
        /// Unit of numeric timestamps (--timestamp, and the timestamp column of --file).
        #[arg(long, value_enum, default_value_t = publish::TimestampUnit::Ms)]
        timestamp_unit: publish::TimestampUnit,
        /// CSV (timestamp,name,value,<label columns>) or .jsonl file of points.
        #[arg(long, conflicts_with_all = ["name", "value"])]
        file: Option<PathBuf>,
        /// Points per message.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Payload encoding.
        #[arg(long, value_enum, default_value_t = Format::Msgpack)]
        format: Format,
        /// Subject (default: prism.metrics.<domain>.<source>.<metric>, domain and source from
        /// the labels domain/source, else exchange=<x> (exchange.<x>), service=<x>
        /// (service.<x>) or host=<x> (host.<x>), else custom.unknown).
        #[arg(long)]
        subject: Option<String>,
    },
    /// Follow alert events and print them, one line each.
    #[command(
        after_help = "Examples:\n  prismwatch tail --priority p1\n  prismwatch tail --status firing --rule disk_full --history --count 10\n  prismwatch tail --json | jq .labels"
    )]
    Tail {
        /// Only this priority.
        #[arg(long, ignore_case = true, value_parser = ["p1", "p2", "p3", "p4"])]
        priority: Option<String>,
        /// Only this status.
        #[arg(long, ignore_case = true, value_parser = ["pending", "firing", "resolved", "cancelled"])]
        status: Option<String>,
        /// Only this rule's events.
        #[arg(long)]
        rule: Option<String>,
        /// Start from the beginning of the alert history instead of new events.
        #[arg(long)]
        history: bool,
        /// Print raw JSON instead of one formatted line.
        #[arg(long)]
        json: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Silences: add, query, expire (like amtool), through the API.
    Silence {
        #[command(subcommand)]
        action: SilenceCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Acknowledge an alert (by id, or by fingerprint: its current episode): no more repeats.
    Ack {
        alert: String,
        #[arg(long, short = 'm', default_value = "")]
        comment: String,
        /// The acknowledgement ends after this long (e.g. 2h); still firing then, it is notified.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Withdraw an acknowledgement.
    Unack {
        alert: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Resolve an external alert by hand (rule alerts resolve when their condition does).
    Resolve {
        alert: String,
        #[arg(long, short = 'm', default_value = "")]
        comment: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List alerts, most urgent first (active ones unless --status says otherwise).
    #[command(
        after_help = "Examples:\n  prismwatch alerts -p p1\n  prismwatch alerts --all exchange=binance 'alertname=~disk.*'\n  prismwatch alerts --json --acknowledged false | jq '.alerts[].id'"
    )]
    Alerts {
        /// active (default), all, pending, firing, resolved or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Shorthand for --status all.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// P1..P4.
        #[arg(long, short = 'p')]
        priority: Option<String>,
        /// Only this rule's alerts.
        #[arg(long, short = 'r')]
        rule: Option<String>,
        /// Only acknowledged (true) or unacknowledged (false) alerts.
        #[arg(long)]
        acknowledged: Option<bool>,
        /// Only silenced (true) or not silenced (false) alerts.
        #[arg(long)]
        silenced: Option<bool>,
        /// At most this many (default 500).
        #[arg(long)]
        limit: Option<usize>,
        /// Label matchers: name=value, name!=value, name=~regex, name!~regex.
        matchers: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Reload rules and routes in every process (validated first; a bad file changes nothing).
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Validate the config and rule files, and print a summary.
    CheckConfig {
        /// Also print the effective configuration (defaults, file and environment) as YAML.
        #[arg(long)]
        print: bool,
    },
    /// Demo: find or start nats-server, generate market-data metrics with incidents, show alerts.
    Demo {
        /// How many times faster than real time the scenario runs.
        #[arg(long, default_value_t = 200.0)]
        speed: f64,
    },
    /// Capacity planning: each metric family's series (capacity.families), their growth over the
    /// last days of PRISM_METRICS, projected 30 days on against their limit, with a
    /// recommendation.
    #[command(
        after_help = "Examples:\n  prismwatch capacity\n  prismwatch capacity --days 14 --json | jq '.families[] | select(.status != \"ok\")'"
    )]
    Capacity {
        /// Days of history the growth is measured over (default: capacity.history_days).
        #[arg(long)]
        days: Option<u32>,
        /// The report as JSON (as GET /api/v1/capacity serves it).
        #[arg(long)]
        json: bool,
    },
    /// Replay PRISM_METRICS through fresh pipelines and write the alert events they give (JSON lines).
    #[command(
        after_help = "Examples:\n  prismwatch replay --output events.jsonl\n  prismwatch replay --since 24h --config candidate.yaml | jq .rule\n  prismwatch replay --from 2026-11-20T00:00:00Z --to 2026-11-21T00:00:00Z\n  prismwatch replay --from-seq 1000 --to-seq 5000"
    )]
    Replay {
        #[command(flatten)]
        range: RangeArgs,
        /// Output file (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// What rules and detectors would have done over history: pages per day, rule, priority and
    /// receiver, a diff against a candidate rule set or config, and a report with a plot of
    /// every alerted series. Runs the live pipeline's code; publishes and notifies nothing.
    #[command(
        after_help = "Examples:\n  prismwatch backtest --since 7d --html report.html\n  prismwatch backtest --since 7d --candidate-rules new-rules/ --html diff.html --json diff.json\n  prismwatch backtest --from 2026-11-20T00:00:00Z --to 2026-11-27T00:00:00Z --subject 'prism.metrics.exchange.*.>' --match 'exchange=\"binance\"'\n  prismwatch backtest --input export.csv --timestamp-unit s --rules rules/ --json -"
    )]
    Backtest {
        #[command(flatten)]
        range: RangeArgs,
        /// Only metrics published on these subjects (repeatable; NATS wildcards), e.g.
        /// 'prism.metrics.exchange.binance.>' or 'service.*.disk_usage_percent'.
        #[arg(long)]
        subject: Vec<String>,
        /// Only alerts whose labels match (repeatable; Alertmanager syntax; `alertname` and
        /// `priority` included), e.g. 'exchange="binance"', 'priority=~"P1|P2"'.
        #[arg(long = "match")]
        matchers: Vec<String>,
        /// Rule files or folders to run (repeatable; default: the config's rules.paths).
        #[arg(long)]
        rules: Vec<PathBuf>,
        /// Diff mode: a candidate config (pipeline, detectors, routing) to compare with the
        /// baseline (--config and --rules).
        #[arg(long)]
        candidate_config: Option<PathBuf>,
        /// Diff mode: candidate rule files or folders (repeatable) to compare with the baseline.
        #[arg(long)]
        candidate_rules: Vec<PathBuf>,
        /// Read the history from a CSV or JSON-lines file of points (the `publish --file`
        /// formats) instead of NATS; --from/--to/--since then select by event time.
        #[arg(long, conflicts_with_all = ["from_seq", "to_seq"])]
        input: Option<PathBuf>,
        /// Unit of the numeric timestamps of --input.
        #[arg(long, value_enum, default_value_t = publish::TimestampUnit::Ms)]
        timestamp_unit: publish::TimestampUnit,
        /// Points per message for --input (as `publish --batch`).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Write the report as one self-contained HTML file.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write the report as JSON ('-': standard output).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the baseline's alert events as JSON lines (as the processor publishes them).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Alerted series plotted in the HTML report, at most.
        #[arg(long, default_value_t = 30)]
        plots: usize,
        /// No progress on standard error.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Notifier tools: send a test notification, re-send dead letters.
    Notify {
        #[command(subcommand)]
        action: NotifyCommand,
    },
    /// Score `timestamp,value` CSV files (NAB format) offline with the live pipeline's detectors.
    Detect {
        /// A CSV file, or a folder of them (scored recursively).
        #[arg(long)]
        input: PathBuf,
        /// Output CSV (default: standard output), or the output folder for a folder input.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Metric name the rows are scored as (selects `pipeline.metric_operators`).
        #[arg(long, default_value = "value")]
        metric: String,
    },
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send a test notification to every channel of RECEIVER (from the routing file) and print
    /// each channel's answer; exits non-zero if one failed.
    Test { receiver: String },
    /// Re-send dead-lettered notifications (after fixing the receiver): each goes back to the
    /// notifiers for the channel that failed, and leaves the dead-letter stream.
    Retry {
        /// Only this receiver's.
        #[arg(long)]
        receiver: Option<String>,
    },
}

/// Where the API is and who calls it (flags, else the environment, else the config's `cli:`).
#[derive(clap::Args)]
struct ApiArgs {
    /// The API's base URL (default: cli.api_url, else http.listen of the config).
    #[arg(long, env = "PRISMWATCH_API_URL", global = true)]
    api_url: Option<String>,
    /// API key or token (default: cli.token).
    #[arg(
        long,
        env = "PRISMWATCH_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// A CA certificate (PEM) to trust for the API's TLS certificate.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

impl ApiArgs {
    fn client(&self, cfg: &config::Config) -> anyhow::Result<manage::ApiClient> {
        manage::ApiClient::new(
            self.api_url.clone(),
            self.token.clone(),
            self.ca_file.clone(),
            cfg,
        )
    }
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence the alerts matching every matcher (name=value, name!=value, name=~regex,
    /// name!~regex); prints the new silence's id.
    #[command(
        after_help = "Examples:\n  prismwatch silence add exchange=okx -d 2h -m 'okx maintenance'\n  prismwatch silence add 'alertname=~disk.*' service=storage --start 2026-11-29T22:00:00Z --end 2026-11-29T23:00:00Z -m swap"
    )]
    Add {
        #[arg(required = true)]
        matchers: Vec<String>,
        #[arg(long, short = 'm', default_value = "")]
        comment: String,
        /// How long from its start (e.g. 30m, 2h, 1d).
        #[arg(long, short = 'd', default_value = "1h")]
        duration: String,
        /// Start (RFC 3339, e.g. 2026-11-29T22:00:00Z); default now.
        #[arg(long)]
        start: Option<String>,
        /// End (RFC 3339); overrides --duration.
        #[arg(long)]
        end: Option<String>,
    },
    /// List active and pending silences (with --expired, expired ones too), those having every
    /// given matcher.
    Query {
        /// Only silences having each of these matchers (name=value, ...).
        matchers: Vec<String>,
        /// Include the expired silences.
        #[arg(long)]
        expired: bool,
        /// Only the ids.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Expire silences now.
    Expire {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// The config, and the rules when the command evaluates them (the API's clients do not: they
/// work from any folder).
fn load(cli_path: &Option<PathBuf>, with_rules: bool) -> anyhow::Result<(Loaded, RuleSet)> {
    let path = config::find(cli_path.as_deref());
    let loaded = config::load(path.as_deref())?;
    let rules = if with_rules {
        app::reload::load_rules_of(&loaded)?
    } else {
        RuleSet::default()
    };
    Ok((loaded, rules))
}

/// A JetStream context for the CLI's one-shot commands.
async fn connect(cfg: &config::Config) -> anyhow::Result<jetstream::Context> {
    let js = jetstream::new(bus::connect(&cfg.nats).await?);
    bus::ensure_streams(&js, &cfg.streams).await?;
    Ok(js)
}

fn main() -> ExitCode {
    // One TLS crypto provider for every client (reqwest, lettre, NATS): ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    #[cfg(unix)]
    if !matches!(cli.command, Command::Run { .. }) {
        // A tool piped into `head` ends quietly when the pipe closes, as Unix tools do (Rust
        // ignores SIGPIPE, which turns every later print into a panic). `run` keeps ignoring
        // it: a closed socket must not stop the service.
        // SAFETY: setting a signal's disposition to its default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api_client = matches!(
        cli.command,
        Command::Silence { .. }
            | Command::Ack { .. }
            | Command::Unack { .. }
            | Command::Resolve { .. }
            | Command::Alerts { .. }
            | Command::Reload { .. }
    );
    // Backtests load their rule sets themselves (`--rules`, `--candidate-rules`).
    let with_rules = !api_client && !matches!(cli.command, Command::Backtest { .. });
    let (loaded, rules) = load(&cli.config, with_rules)?;
    let mut cfg = loaded.config.clone();
    if !matches!(cli.command, Command::Run { .. })
        && !cli.verbose
        && std::env::var_os("RUST_LOG").is_none()
    {
        // A tool's output is its data (and the demo's, the alert lines): keep the NATS
        // client's routine logs out of it unless asked (-v).
        cfg.telemetry.log_level = "warn".into();
    }
    telemetry::init_logs(&cfg.telemetry);
    match cli.command {
        Command::CheckConfig { print } => {
            if print {
                // Through JSON so operators print in the `- dedup: {...}` form the loader reads.
                println!("{}", serde_norway::to_string(&serde_json::to_value(&cfg)?)?);
                return Ok(());
            }
            match &loaded.file {
                Some(f) => println!("config: {}", f.display()),
                None => println!(
                    "config: built-in defaults (no file given, and none at {})",
                    config::search_path()
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            let sources: std::collections::BTreeSet<&str> =
                rules.rules.iter().map(|r| r.source.as_str()).collect();
            println!(
                "rules: {} from {}",
                rules.rules.len(),
                sources.into_iter().collect::<Vec<_>>().join(", ")
            );
            for r in rules.rules.iter().filter(|r| r.slo.is_none()) {
                // A graded rule in one line: its grades follow it.
                if let Some(family) = r.family.as_deref().filter(|f| *f != r.name) {
                    if r.predict_after_ms.is_none() {
                        let grades = rules
                            .rules
                            .iter()
                            .filter(|g| g.family.as_deref() == Some(family))
                            .map(|g| {
                                format!(
                                    "{} {}",
                                    g.priority,
                                    fmt_duration_ms(g.predict_within_ms.unwrap_or(0))
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        println!(
                            "  {family:<26} {}, or predicted within: {grades}",
                            r.condition
                        );
                    }
                    continue;
                }
                let mut line = format!("  {:<26} {}  {}", r.name, r.priority, r.condition);
                if r.for_ms > 0 {
                    line.push_str(&format!(" for {}", fmt_duration_ms(r.for_ms)));
                }
                if let Some(h) = r.predict_within_ms {
                    line.push_str(&format!(", or predicted within {}", fmt_duration_ms(h)));
                }
                println!("{line}");
            }
            for s in &rules.slos {
                let objectives = s
                    .objectives
                    .iter()
                    .map(|o| format!("{} {} %", o.name, o.target * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ");
                let by = if s.group_by.is_empty() {
                    String::new()
                } else {
                    format!(" per {}", s.group_by.join(", "))
                };
                println!(
                    "  slo {:<22} {objectives}{by}; {} burn-rate rules ({})",
                    s.name,
                    rules
                        .rules
                        .iter()
                        .filter(|r| r.slo.as_deref() == Some(&s.name))
                        .count(),
                    s.alerts
                        .iter()
                        .map(|a| format!("{} {}", a.name, a.priority))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let routing =
                prismwatch::app::reload::Sources::new(cfg.clone(), loaded.file.clone(), true)
                    .load_routing()?;
            println!(
                "routing: {} ({} routes, {} receivers)",
                routing.file,
                routing.routes.routes.len(),
                routing.receivers.len()
            );
            println!("OK");
            Ok(())
        }
        Command::Run { only } => {
            let components = if only.is_empty() {
                Component::ALL.to_vec()
            } else {
                only
            };
            let stop = CancellationToken::new();
            app::stop_on_signals(stop.clone());
            app::run_from(cfg, loaded.file.clone(), rules, components, stop).await
        }
        Command::Silence { action, api } => {
            let client = api.client(&cfg)?;
            match action {
                SilenceCommand::Add {
                    matchers,
                    comment,
                    duration,
                    start,
                    end,
                } => {
                    manage::silence_add(
                        &client,
                        SilenceAdd {
                            matchers: &matchers,
                            comment: &comment,
                            duration: &duration,
                            start: start.as_deref(),
                            end: end.as_deref(),
                        },
                        api.json,
                    )
                    .await
                }
                SilenceCommand::Query {
                    matchers,
                    expired,
                    quiet,
                } => manage::silence_query(&client, &matchers, expired, quiet, api.json).await,
                SilenceCommand::Expire { ids } => {
                    manage::silence_expire(&client, &ids, api.json).await
                }
            }
        }
        Command::Ack {
            alert,
            comment,
            expires,
            api,
        } => {
            manage::ack(
                &api.client(&cfg)?,
                &alert,
                &comment,
                expires.as_deref(),
                api.json,
            )
            .await
        }
        Command::Unack { alert, api } => manage::unack(&api.client(&cfg)?, &alert, api.json).await,
        Command::Resolve {
            alert,
            comment,
            api,
        } => manage::resolve(&api.client(&cfg)?, &alert, &comment, api.json).await,
        Command::Alerts {
            status,
            all,
            priority,
            rule,
            acknowledged,
            silenced,
            limit,
            matchers,
            api,
        } => {
            let q = manage::AlertQuery {
                status: if all { Some("all".into()) } else { status },
                priority,
                rule,
                matchers,
                acknowledged,
                silenced,
                limit,
            };
            manage::alerts(&api.client(&cfg)?, &q, api.json).await
        }
        Command::Notify { action } => match action {
            NotifyCommand::Test { receiver } => {
                let sources =
                    prismwatch::app::reload::Sources::new(cfg.clone(), loaded.file.clone(), true);
                let routing = sources.load_routing()?;
                let Some(r) = routing.receivers.iter().find(|r| r.name == receiver) else {
                    anyhow::bail!(
                        "{}: no receiver {receiver:?} (receivers: {})",
                        routing.file,
                        routing
                            .receivers
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                };
                let results = prismwatch::notify::test_receiver(&cfg.notify, r).await;
                if results.is_empty() {
                    anyhow::bail!("receiver {receiver:?} has no channels");
                }
                let mut failed = 0;
                for (key, r) in results {
                    match r {
                        Ok(answer) => println!("{key}: delivered: {answer}"),
                        Err(e) => {
                            failed += 1;
                            println!("{key}: FAILED: {e}");
                        }
                    }
                }
                if failed > 0 {
                    anyhow::bail!("{failed} channel(s) failed");
                }
                Ok(())
            }
            NotifyCommand::Retry { receiver } => {
                let js = connect(&cfg).await?;
                let n =
                    prismwatch::tools::notify::retry_dead(&js, &cfg, receiver.as_deref()).await?;
                println!("re-sent {n} dead-lettered notification(s)");
                Ok(())
            }
        },
        Command::Reload { api } => manage::reload(&api.client(&cfg)?, api.json).await,
        Command::Publish {
            name,
            labels,
            value,
            timestamp,
            timestamp_unit,
            file,
            batch,
            format,
            subject,
        } => {
            let points = match file {
                Some(f) => publish::read_points(&f, timestamp_unit)?,
                None => {
                    let mut map = std::collections::BTreeMap::new();
                    for l in labels {
                        let (k, v) = l
                            .split_once('=')
                            .with_context(|| format!("label {l:?} is not key=value"))?;
                        map.insert(k.to_string(), v.to_string());
                    }
                    vec![MetricPoint {
                        name: name.unwrap_or_default(),
                        labels: map,
                        value: value.unwrap_or_default(),
                        timestamp: match timestamp {
                            Some(t) => publish::parse_timestamp(&t, timestamp_unit)
                                .map_err(anyhow::Error::msg)?,
                            None => clock::now_ms(),
                        },
                    }]
                }
            };
            // What the processor would refuse is named now, not dead-lettered in silence.
            let (refused, warnings) = publish::check_points(&points, &cfg, clock::now_ms());
            if !refused.is_empty() {
                anyhow::bail!(
                    "nothing published: the processor would refuse {} of {} points:\n  {}",
                    refused.len(),
                    points.len(),
                    refused
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n  ")
                );
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let js = jetstream::new(bus::connect(&cfg.nats).await?);
            bus::ensure_streams(&js, &cfg.streams).await?;
            let encoding = match format {
                Format::Json => Encoding::Json,
                Format::Msgpack => Encoding::MsgPack,
            };
            let n =
                publish::publish_points(&js, &points, batch, encoding, subject.as_deref()).await?;
            println!("published {} points in {n} messages", points.len());
            Ok(())
        }
        Command::Tail {
            priority,
            status,
            rule,
            history,
            json,
            count,
        } => {
            let js = jetstream::new(bus::connect(&cfg.nats).await?);
            bus::ensure_streams(&js, &cfg.streams).await?;
            let (priority, status) = (
                priority.map(|p| p.to_lowercase()),
                status.map(|s| s.to_lowercase()),
            );
            let filter = prismwatch::subjects::alert_filter(
                priority.as_deref(),
                status.as_deref(),
                rule.as_deref(),
            );
            let mut seen = 0;
            tail::follow(&js, &cfg.streams.alerts.name, &filter, history, |e| {
                if json {
                    println!("{}", serde_json::to_string(&e).unwrap_or_default());
                } else {
                    println!("{}", tail::format_event(&e));
                }
                seen += 1;
                count.is_none_or(|c| seen < c)
            })
            .await
        }
        Command::Demo { speed } => demo::run(cfg, rules, speed).await.map(|_| ()),
        Command::Capacity { days, json } => {
            if let Some(d) = days {
                cfg.capacity.history_days = d;
            }
            let js = jetstream::new(bus::connect(&cfg.nats).await?);
            let report =
                prismwatch::capacity::build(&js, &cfg, prismwatch::tools::clock::now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", prismwatch::capacity::table(&report));
            }
            Ok(())
        }
        Command::Replay { range, output } => {
            let js = jetstream::new(bus::connect(&cfg.nats).await?);
            let times = range.times()?;
            let (from_seq, to_seq) = if times.from.is_some() || times.to.is_some() {
                let (f, t) = replay::seq_range_of_times(&js, &cfg, times.from, times.to).await?;
                (f, t.or(range.to_seq))
            } else {
                (range.from_seq, range.to_seq)
            };
            let mut lines = String::new();
            let n = replay::replay_range(&js, &cfg, &rules, from_seq, to_seq, |events, _| {
                for e in events {
                    lines.push_str(&serde_json::to_string(&e).unwrap_or_default());
                    lines.push('\n');
                }
            })
            .await?;
            match output {
                Some(p) => {
                    std::fs::write(&p, lines).with_context(|| format!("writing {}", p.display()))?
                }
                None => print!("{lines}"),
            }
            eprintln!(
                "replayed {} messages, {} points ({} rejected or late): {} alert events",
                n.messages, n.points, n.rejected_points, n.events
            );
            Ok(())
        }
        Command::Backtest {
            range,
            subject,
            matchers,
            rules,
            candidate_config,
            candidate_rules,
            input,
            timestamp_unit,
            batch,
            html,
            json,
            events,
            plots,
            quiet,
        } => {
            let mut variants = vec![backtest::Variant::load(
                "baseline",
                cli.config.as_deref(),
                &rules,
            )?];
            if candidate_config.is_some() || !candidate_rules.is_empty() {
                let config = candidate_config.as_deref().or(cli.config.as_deref());
                let rules = if candidate_rules.is_empty() {
                    &rules
                } else {
                    &candidate_rules
                };
                variants.push(backtest::Variant::load("candidate", config, rules)?);
            }
            let times = range.times()?;
            let history = match &input {
                Some(path) => {
                    backtest::History::file(path, timestamp_unit, batch, times, &subject)?
                }
                None => {
                    let js = jetstream::new(bus::connect(&cfg.nats).await?);
                    backtest::History::stream(
                        js,
                        &cfg,
                        times,
                        (range.from_seq, range.to_seq),
                        &subject,
                    )
                    .await?
                }
            };
            let options = backtest::Options {
                subject_filters: subject,
                label_filters: matchers,
                plots: if html.is_some() { plots } else { 0 },
                quiet,
            };
            let out = backtest::run(&history, &variants, &options).await?;
            if let Some(p) = &events {
                std::fs::write(p, out.events_jsonl(0))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            if let Some(p) = &html {
                std::fs::write(p, backtest::html::render(&out.report)?)
                    .with_context(|| format!("writing {}", p.display()))?;
                if !quiet {
                    eprintln!("report: {}", p.display());
                }
            }
            match json.as_deref() {
                Some(p) if p == Path::new("-") => {
                    println!("{}", serde_json::to_string_pretty(&out.report)?)
                }
                Some(p) => std::fs::write(p, serde_json::to_vec_pretty(&out.report)?)
                    .with_context(|| format!("writing {}", p.display()))?,
                None => print!("{}", out.report.text()),
            }
            Ok(())
        }
        Command::Detect {
            input,
            output,
            metric,
        } => detect::run(&cfg, &rules, &metric, &input, output.as_deref()),
    }
}
