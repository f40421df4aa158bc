//! Progress of a backtest pass on stderr: a bar (points/s, ETA) on a terminal, a plain line every
//! few seconds when piped or logged.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: &'static str,
    bar: Option<ProgressBar>,
    quiet: bool,
    started: Instant,
    last_line: Instant,
    /// Points the pipelines have run (counted by the thread that runs them).
    pub points: Arc<AtomicU64>,
    messages: u64,
}

impl Progress {
    /// `quiet`: say nothing (tests, `--quiet`).
    pub fn new(label: &'static str, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            // Short enough for an 80-column terminal (a wrapped bar redraws badly).
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:20}] {percent:>3}% {human_pos}/{human_len} msgs {msg} ETA {eta}",
                )
                .expect("progress template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label);
            bar
        });
        Self {
            label,
            bar,
            quiet,
            started: Instant::now(),
            last_line: Instant::now(),
            points: Arc::new(AtomicU64::new(0)),
            messages: 0,
        }
    }

    fn points_per_s(&self) -> f64 {
        self.points.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// `read` more messages were read; `remaining` are still to come.
    pub fn advance(&mut self, read: u64, remaining: u64) {
        self.messages += read;
        let total = self.messages + remaining;
        let rate = self.points_per_s();
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(self.messages);
            bar.set_message(format!("{} pts/s", si(rate)));
        } else if !self.quiet && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            let done = self.messages as f64 / total.max(1) as f64;
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = if done > 0.0 {
                elapsed * (1.0 - done) / done
            } else {
                0.0
            };
            eprintln!(
                "{}: {:.0}% ({} of {} messages), {} points/s, ETA {:.0} s",
                self.label,
                100.0 * done,
                self.messages,
                total,
                si(rate),
                eta
            );
        }
    }

    /// Ends the pass: clears the bar and says what it did.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "{}: {} messages, {} points in {:.1} s ({} points/s)",
                self.label,
                self.messages,
                self.points.load(Ordering::Relaxed),
                self.started.elapsed().as_secs_f64(),
                si(self.points_per_s())
            );
        }
    }
}

/// 1234567 -> "1.23 M".
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
