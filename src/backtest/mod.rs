//! `prismwatch backtest`: what rules and detectors would have done over history, through the
//! very pipeline code the live processor runs (one fresh pipeline per partition, the same
//! timelines and batching), with nothing published and nothing notified.
//!
//! One read of the history feeds every variant (a baseline and, in diff mode, a candidate rule
//! set or config). A second read traces the series that alerted, for the report's plots.

pub mod diff;
pub mod history;
pub mod html;
pub mod progress;
pub mod report;
pub mod summary;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;
use std::sync::Arc;

use crate::alerting::alert::routing_labels;
use crate::alerting::config::Routing;
use crate::alerting::matchers::{matches_all, LabelMatcher, MatcherDef};
use crate::app::reload::Sources;
use crate::config::{self, Config};
use crate::model::AlertEvent;
use crate::pipeline::TracePoint;
use crate::processor::replay::{Flushed, Lanes};
use crate::rules::RuleSet;
pub use history::{History, TimeRange};
use progress::Progress;

/// A rule set and config to try.
pub struct Variant {
    pub name: String,
    /// Where it comes from, for the report.
    pub source: String,
    pub config: Config,
    pub rules: RuleSet,
    pub routing: Routing,
}

impl Variant {
    /// The config at `config_file` (else found as `run` finds it), with its rule paths replaced
    /// by `rules` when given.
    pub fn load(
        name: &str,
        config_file: Option<&Path>,
        rules: &[std::path::PathBuf],
    ) -> anyhow::Result<Variant> {
        let path = config::find(config_file);
        let mut loaded = config::load(path.as_deref())?;
        if !rules.is_empty() {
            loaded.config.rules.paths = rules.to_vec();
        }
        let sources = Sources::new(loaded.config.clone(), loaded.file.clone(), true);
        let (rules_set, routing) = sources.load()?;
        let source = format!(
            "config {}, rules {}",
            loaded
                .file
                .as_ref()
                .map_or("<built-in defaults>".to_string(), |f| f
                    .display()
                    .to_string()),
            loaded
                .config
                .rules
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(Variant {
            name: name.into(),
            source,
            config: loaded.config,
            rules: rules_set,
            routing: routing.expect("routing loaded"),
        })
    }
}

/// What to keep and show.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Subject filters, as given (for the report; the history applies them).
    pub subject_filters: Vec<String>,
    /// Label matchers in Alertmanager syntax: only alerts that match are kept.
    pub label_filters: Vec<String>,
    /// Series to plot at most (0: no trace pass).
    pub plots: usize,
    pub quiet: bool,
}

/// A backtest's results.
pub struct Outcome {
    pub report: report::Report,
    pub evaluated: Evaluated,
}

impl Outcome {
    /// A variant's alert events as JSON lines, each exactly the payload the processor publishes.
    pub fn events_jsonl(&self, variant: usize) -> String {
        let mut out = String::new();
        for (_, e) in &self.evaluated.events[variant] {
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

/// Runs a backtest: every variant over the history in one read, the report, and (when plots
/// are wanted) a second read that traces the plotted series.
pub async fn run(
    history: &History,
    variants: &[Variant],
    options: &Options,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!variants.is_empty(), "nothing to backtest: no rule set");
    let labels = options
        .label_filters
        .iter()
        .map(|m| {
            MatcherDef::parse(m)
                .and_then(|d| d.compile())
                .map_err(|e| anyhow::anyhow!("--match {m:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let evaluated = evaluate(history, variants, &labels, options.quiet).await?;
    let mut report = report::Report::build(
        history.describe().to_string(),
        (
            options.subject_filters.clone(),
            options.label_filters.clone(),
        ),
        variants,
        &evaluated,
        options.plots,
    );
    if !report.series.is_empty() {
        let shown = variants.last().expect("a variant");
        let traces = trace(history, shown, report.plotted_keys(), options.quiet).await?;
        report.attach_traces(traces);
    }
    Ok(Outcome { report, evaluated })
}

/// What the first read gave: every variant's alert events (with their series), and counts.
#[derive(Debug, Default)]
pub struct Evaluated {
    pub messages: u64,
    pub points: u64,
    pub rejected_points: u64,
    /// Per variant, in order.
    pub events: Vec<Vec<(Arc<str>, AlertEvent)>>,
}

/// Runs the history through every variant's pipelines in one read; keeps the events whose
/// labels match `labels`.
pub async fn evaluate(
    history: &History,
    variants: &[Variant],
    labels: &[LabelMatcher],
    quiet: bool,
) -> anyhow::Result<Evaluated> {
    let lanes = variants
        .iter()
        .map(|v| Lanes::new(&v.config, &v.rules))
        .collect();
    let labels = labels.to_vec();
    let init = Evaluated {
        events: vec![Vec::new(); variants.len()],
        ..Default::default()
    };
    drive(
        history,
        &variants[0].config,
        "backtest",
        quiet,
        lanes,
        init,
        move |acc, variant, f| {
            if variant == 0 {
                acc.messages += f.out.stats.messages;
                acc.points += f.out.stats.points;
                acc.rejected_points += f.out.rejects.iter().map(|r| r.points as u64).sum::<u64>();
            }
            acc.events[variant].extend(
                f.out
                    .events
                    .into_iter()
                    .filter(|e| {
                        labels.is_empty() || matches_all(&labels, &routing_labels(&e.event))
                    })
                    .map(|e| (e.series, e.event)),
            );
        },
    )
    .await
}

/// Every point of `series` as `variant`'s detectors scored it, by series.
pub async fn trace(
    history: &History,
    variant: &Variant,
    series: HashSet<Arc<str>>,
    quiet: bool,
) -> anyhow::Result<BTreeMap<Arc<str>, Vec<TracePoint>>> {
    let mut lanes = Lanes::new(&variant.config, &variant.rules);
    lanes.watch(Arc::new(series));
    drive(
        history,
        &variant.config,
        "plots",
        quiet,
        vec![lanes],
        BTreeMap::new(),
        |acc: &mut BTreeMap<Arc<str>, Vec<TracePoint>>, _, f| {
            for t in f.out.traces {
                acc.entry(t.series.clone()).or_default().push(t);
            }
        },
    )
    .await
}

/// Lowers the calling thread's scheduling priority (nice 10). Reading is a chain of pull
/// requests: whenever the reading task waits for a CPU, the server waits for its next request,
/// and on a machine with few cores the evaluating thread is what it waits behind. Evaluation
/// has chunks queued and loses nothing by yielding (and a backtest on the host of a live
/// processor yields to it too). `cargo bench --bench backtest -- --backbone-only` on 2 cores,
/// runs of 5 paired passes: median 78 % of the raw replay rate without (11 runs, 75-81 %),
/// 81 % with (19 runs, 69-93 %); the VM's noise is as large as the gain.
fn yield_to_the_reader() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on this thread's id; a failure leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// Reads the history once and runs every message through each set of lanes, on a thread of its
/// own (at a lower priority, see [`yield_to_the_reader`]) so that reading and evaluating
/// overlap. `take(acc, lanes index, batch)` folds results.
async fn drive<A: Send + 'static>(
    history: &History,
    cfg: &Config,
    label: &'static str,
    quiet: bool,
    mut lanes: Vec<Lanes>,
    mut acc: A,
    mut take: impl FnMut(&mut A, usize, Flushed) + Send + 'static,
) -> anyhow::Result<A> {
    let mut progress = Progress::new(label, quiet);
    let points = progress.points.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<crate::ingest::Incoming>>(16);
    let worker = std::thread::Builder::new()
        .name(format!("{label}-eval"))
        .spawn(move || {
            yield_to_the_reader();
            let last = lanes.len() - 1;
            let mut count = |acc: &mut A, i: usize, f: Flushed| {
                if i == 0 {
                    points.fetch_add(f.out.stats.points, Ordering::Relaxed);
                }
                take(acc, i, f);
            };
            for chunk in rx {
                for inc in chunk {
                    // Payloads are shared (`Bytes`): a copy per variant costs a few words.
                    let (others, [last_lanes]) = lanes.split_at_mut(last) else {
                        unreachable!("split at the last index")
                    };
                    for (i, l) in others.iter_mut().enumerate() {
                        if let Some(f) = l.push(inc.clone()) {
                            count(&mut acc, i, f);
                        }
                    }
                    if let Some(f) = last_lanes.push(inc) {
                        count(&mut acc, last, f);
                    }
                }
            }
            for (i, l) in lanes.iter_mut().enumerate() {
                for f in l.finish() {
                    count(&mut acc, i, f);
                }
            }
            acc
        })?;
    let read = history
        .read(cfg, |chunk, remaining| {
            let n = chunk.len() as u64;
            // Blocks (off the runtime's workers) only when the evaluating thread is behind.
            match tx.try_send(chunk) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(chunk)) => {
                    tokio::task::block_in_place(|| tx.send(chunk)).map_err(|_| ())
                }
                Err(TrySendError::Disconnected(_)) => Err(()),
            }
            .map_err(|_| anyhow::anyhow!("the evaluating thread stopped"))?;
            progress.advance(n, remaining);
            Ok(())
        })
        .await;
    drop(tx);
    let acc = tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the evaluating thread panicked"))?;
    read?;
    progress.finish();
    Ok(acc)
}
