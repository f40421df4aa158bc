//! The pipeline of one partition on a thread of its own: CPU work never blocks the tasks that
//! move bytes to and from NATS, and the two overlap. Checkpoints are serialised here too, off
//! the async runtime, streamed out in frames through a bounded channel, a step at a time
//! between batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ingest::Incoming;
use crate::pipeline::checkpoint::{CheckpointHeader, FrameSink};
use crate::pipeline::{BatchOutput, Pipeline};
use crate::tools::clock;

/// Batches the pipeline thread may hold at once.
pub const MAX_IN_FLIGHT: usize = 2;

/// Longest the pipeline thread writes checkpoint series at a time before it looks for a batch
/// again: the delay a checkpoint adds to a batch.
const CHECKPOINT_STEP: Duration = Duration::from_millis(1);
/// While batches keep coming, steps begin at most this often: a checkpoint takes at most a
/// quarter of the pipeline thread beside the series its batches write (those touched first
/// after the cut), and its upload is spread out as well, so that it does not take the cores
/// from the rest at once (measured: written in one go, 31,000 series stalled the bench's
/// triggers up to ~100 ms). Once a whole wait passes without a batch (an idle partition, or
/// one that is stopping), the steps follow each other at once.
const CHECKPOINT_STEP_EVERY: Duration = Duration::from_millis(4);

/// What the worker did with one batch of messages.
pub struct BatchDone {
    /// The messages it processed (redeliveries of already covered ones removed); the output's
    /// message indices refer to this.
    pub batch: Vec<Incoming>,
    pub output: BatchOutput,
    /// The partition has timers waiting (stream time must keep moving).
    pub has_timers: bool,
    pub series: usize,
    pub sources: usize,
    pub quarantined: usize,
    pub watermark: i64,
    /// The SLO groups' status, when a minute closed since the last batch.
    pub slos: Option<Vec<crate::slo::SloStatus>>,
}

/// A written checkpoint, from the worker's side.
#[derive(Debug, Clone, Copy)]
pub struct Serialised {
    pub bytes: usize,
    pub series: u64,
    /// From the cut to the last byte handed over (batches went on meanwhile).
    pub seconds: f64,
    /// How long the pipeline stopped for the cut itself (its header).
    pub pause_seconds: f64,
}

/// A checkpoint the pipeline thread is writing.
struct Writing {
    sink: mpsc::Sender<std::io::Result<Bytes>>,
    reply: oneshot::Sender<Result<Serialised, String>>,
    started: Instant,
    pause_seconds: f64,
    /// When the next step may begin.
    next_step: Instant,
    /// No job came during the last wait for a step.
    idle: bool,
}

impl Writing {
    /// Ends a checkpoint that cannot be completed: its reader gets an error instead of an end
    /// frame, so an incomplete checkpoint never replaces the last good one.
    fn fail(self, why: String) {
        let _ = self
            .sink
            .blocking_send(Err(std::io::Error::other(why.clone())));
        let _ = self.reply.send(Err(why));
    }
}

enum Job {
    Process {
        batch: Vec<Incoming>,
        reply: oneshot::Sender<BatchDone>,
    },
    Checkpoint {
        partition: u32,
        last_seq: u64,
        sink: mpsc::Sender<std::io::Result<Bytes>>,
        reply: oneshot::Sender<Result<Serialised, String>>,
    },
    Describe {
        key: String,
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
}

pub struct PipelineWorker {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl PipelineWorker {
    /// `processed_through`: the stream sequence the pipeline's state already covers.
    pub fn start(pipeline: Pipeline, partition: u32, processed_through: u64) -> Self {
        // Room for the batches, a checkpoint and a few series lookups.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(MAX_IN_FLIGHT + 8);
        let thread = PipelineThread {
            pipeline,
            processed_through,
            watermark: (i64::MIN, 0),
            slo_minutes: 0,
            writing: None,
        };
        std::thread::Builder::new()
            .name(format!("pipeline-p{partition}"))
            .spawn(move || thread.run(rx))
            .expect("spawn the pipeline thread");
        Self { jobs: tx }
    }

    /// Queues a batch; its result arrives on the returned receiver.
    pub fn submit(&self, batch: Vec<Incoming>) -> Option<oneshot::Receiver<BatchDone>> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Process { batch, reply }).ok()?;
        Some(rx)
    }

    /// Looks a series up between batches; `None` when the thread is busy with a full queue
    /// (the caller answers nothing rather than wait).
    pub fn describe(&self, key: String) -> Option<oneshot::Receiver<Option<serde_json::Value>>> {
        let (reply, rx) = oneshot::channel();
        self.jobs.try_send(Job::Describe { key, reply }).ok()?;
        Some(rx)
    }

    /// Checkpoints the state covering everything up to `last_seq` (call with no batch in
    /// flight) into `sink`, frame by frame: the state is cut at once, and its series follow
    /// while later batches are processed. The reply comes when the last frame is handed over.
    pub fn checkpoint(
        &self,
        partition: u32,
        last_seq: u64,
        sink: mpsc::Sender<std::io::Result<Bytes>>,
    ) -> Option<oneshot::Receiver<Result<Serialised, String>>> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Checkpoint {
                partition,
                last_seq,
                sink,
                reply,
            })
            .ok()?;
        Some(rx)
    }
}

/// The pipeline thread's own state.
struct PipelineThread {
    pipeline: Pipeline,
    /// The stream sequence the pipeline's state covers.
    processed_through: u64,
    /// The combined watermark visits every source: refreshed every 64 batches, not after each
    /// (it is only a gauge).
    watermark: (i64, u32),
    slo_minutes: u64,
    writing: Option<Writing>,
}

impl PipelineThread {
    fn run(mut self, jobs: std::sync::mpsc::Receiver<Job>) {
        loop {
            // While a checkpoint is being written, jobs come first and the checkpoint advances
            // a step at a time between them, paced.
            let job = if let Some(w) = &mut self.writing {
                let wait = w.next_step.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(wait) {
                    Ok(job) => {
                        w.idle = false;
                        Some(job)
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle once a real wait brought nothing.
                        w.idle |= !wait.is_zero();
                        None
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                }
            };
            match job {
                None => {}
                Some(Job::Process { batch, reply }) => {
                    let _ = reply.send(self.process(batch));
                }
                Some(Job::Checkpoint {
                    partition,
                    last_seq,
                    sink,
                    reply,
                }) => self.begin_checkpoint(partition, last_seq, sink, reply),
                Some(Job::Describe { key, reply }) => {
                    let _ = reply.send(self.pipeline.describe_series(&key));
                }
            }
            self.checkpoint_step();
        }
        if let Some(w) = self.writing.take() {
            self.pipeline.abandon_checkpoint();
            w.fail("the partition stopped before its checkpoint was complete".into());
        }
    }

    fn process(&mut self, mut batch: Vec<Incoming>) -> BatchDone {
        // Redeliveries of messages the state already covers are acked without processing.
        let through = self.processed_through;
        batch.retain(|m| m.stream_seq > through);
        self.processed_through = batch.iter().map(|m| m.stream_seq).fold(through, u64::max);
        let pipeline = &mut self.pipeline;
        let output = pipeline.process(&batch);
        if self.watermark.1.is_multiple_of(64) {
            self.watermark.0 = pipeline.watermark();
        }
        self.watermark.1 = self.watermark.1.wrapping_add(1);
        let slo_minutes = &mut self.slo_minutes;
        BatchDone {
            batch,
            output,
            has_timers: pipeline.has_timers(),
            series: pipeline.series_count(),
            sources: pipeline.source_count(),
            quarantined: pipeline.quarantined_count(),
            watermark: self.watermark.0,
            slos: (pipeline.slo_minutes() != *slo_minutes).then(|| {
                *slo_minutes = pipeline.slo_minutes();
                pipeline.slo_status()
            }),
        }
    }

    /// Cuts the state for a checkpoint covering everything up to `last_seq`: its header goes
    /// out now, its series in later steps.
    fn begin_checkpoint(
        &mut self,
        partition: u32,
        last_seq: u64,
        sink: mpsc::Sender<std::io::Result<Bytes>>,
        reply: oneshot::Sender<Result<Serialised, String>>,
    ) {
        let started = Instant::now();
        let mut w = Writing {
            sink,
            reply,
            started,
            pause_seconds: 0.0,
            next_step: started,
            idle: false,
        };
        if self.writing.is_some() {
            return w.fail("a checkpoint is being written already".into());
        }
        match begin(&mut self.pipeline, partition, last_seq, &w.sink) {
            Ok(()) => {
                w.pause_seconds = started.elapsed().as_secs_f64();
                self.writing = Some(w);
            }
            Err(e) => w.fail(e),
        }
    }

    /// Writes the checkpoint begun for up to [`CHECKPOINT_STEP`], when a step is due; replies
    /// once it is complete.
    fn checkpoint_step(&mut self) {
        let now = Instant::now();
        match &mut self.writing {
            Some(w) if now >= w.next_step => {
                w.next_step = if w.idle {
                    now
                } else {
                    now + CHECKPOINT_STEP_EVERY
                }
            }
            _ => return,
        }
        let Some(result) = self.pipeline.checkpoint_step(now + CHECKPOINT_STEP) else {
            return;
        };
        let w = self.writing.take().expect("a checkpoint being written");
        match result {
            Ok(written) => {
                let _ = w.reply.send(Ok(Serialised {
                    bytes: written.bytes,
                    series: written.series,
                    seconds: w.started.elapsed().as_secs_f64(),
                    pause_seconds: w.pause_seconds,
                }));
            }
            Err(e) => w.fail(e),
        }
    }
}

/// Begins a checkpoint covering everything up to `last_seq`, its frames going to `sink` (a full
/// channel holds the pipeline back: memory stays bounded).
fn begin(
    pipeline: &mut Pipeline,
    partition: u32,
    last_seq: u64,
    sink: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), String> {
    let header = CheckpointHeader {
        partition,
        last_seq,
        written_at_ms: clock::now_ms(),
        pipeline: pipeline.header(),
    };
    let tx = sink.clone();
    let receiver_gone = AtomicBool::new(false);
    let frames: FrameSink = Arc::new(move |b| {
        // Called from the pipeline thread and the pool's (shards hand over their own frames).
        if !receiver_gone.load(Ordering::Relaxed) && tx.blocking_send(Ok(b)).is_err() {
            receiver_gone.store(true, Ordering::Relaxed);
        }
    });
    pipeline
        .begin_checkpoint(&header, frames)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IngestConfig;
    use crate::model::MetricPoint;
    use crate::pipeline::checkpoint;
    use crate::pipeline::PipelineConfig;
    use crate::rules::RuleSet;

    const T0: i64 = 1_764_000_000_000;

    /// A message of one point for each of `venues`, stored as message `seq`.
    fn message(venues: std::ops::Range<usize>, seq: u64) -> Incoming {
        let points: Vec<MetricPoint> = venues
            .map(|v| MetricPoint {
                name: "delay_seconds".into(),
                labels: [("venue".to_string(), format!("v{v}"))].into(),
                value: 1.0,
                timestamp: T0 + seq as i64,
            })
            .collect();
        Incoming {
            subject: "prism.part.0.exchange.x.delay_seconds".into(),
            payload: rmp_serde::to_vec_named(&points).unwrap().into(),
            content_type: None,
            stream_seq: seq,
            published_ms: T0 + seq as i64,
        }
    }

    /// A pipeline holding `n` series, through stream sequence `n / 1000`.
    fn pipeline_with(n: usize) -> Pipeline {
        let mut p = Pipeline::new(
            &PipelineConfig::default(),
            &IngestConfig::default(),
            RuleSet::default(),
        );
        for (i, start) in (0..n).step_by(1000).enumerate() {
            p.process(&[message(start..(start + 1000).min(n), i as u64 + 1)]);
        }
        assert_eq!(p.series_count(), n);
        p
    }

    #[test]
    fn a_checkpoint_goes_on_with_the_batches_and_holds_the_state_of_its_cut() {
        let worker = PipelineWorker::start(pipeline_with(5_000), 0, 5);
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                bytes.extend_from_slice(&chunk.expect("a chunk"));
            }
            bytes
        });
        let written = worker.checkpoint(0, 5, tx).unwrap();
        // Batches queued behind the cut: new series, and changes to series of the cut.
        let done: Vec<_> = (0..3)
            .map(|i| worker.submit(vec![message(i * 3000..i * 3000 + 3000, 6 + i as u64)]))
            .collect();
        for d in done {
            let d = d.unwrap().blocking_recv().unwrap();
            assert!(d.output.rejects.is_empty());
        }
        let s = written.blocking_recv().unwrap().unwrap();
        drop(worker);
        let bytes = reader.join().unwrap();
        assert_eq!((s.series, s.bytes), (5_000, bytes.len()));
        let (header, series) = checkpoint::decode_all(&bytes).unwrap();
        assert_eq!((header.last_seq, header.pipeline.series), (5, 5_000));
        // Each series as it was at the cut: its one point of message `v / 1000 + 1`.
        for snap in &series {
            let v: usize = snap.key.rsplit("v").next().unwrap().parse().unwrap();
            assert_eq!(snap.last.ts, T0 + (v / 1000 + 1) as i64, "{}", snap.key);
        }
    }

    #[test]
    fn a_checkpoint_cut_off_by_a_stop_ends_in_an_error_not_an_end() {
        let worker = PipelineWorker::start(pipeline_with(50_000), 0, 50);
        // Room for one chunk: the thread waits with the header until the test reads, and by
        // then the partition has stopped (the worker is dropped).
        let (tx, mut rx) = mpsc::channel(1);
        let reply = worker.checkpoint(0, 50, tx).unwrap();
        drop(worker);
        let mut chunks = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            chunks.push(chunk);
        }
        let (last, before) = chunks.split_last().unwrap();
        assert!(
            last.is_err(),
            "the reader is told the checkpoint is incomplete"
        );
        assert!(before.len() >= 2, "preamble and header first");
        assert!(before
            .iter()
            .all(|c| matches!(c, Ok(b) if b[..] != checkpoint::END[..])));
        let why = reply.blocking_recv().unwrap().unwrap_err();
        assert!(
            why.contains("stopped before its checkpoint was complete"),
            "{why}"
        );
    }
}
