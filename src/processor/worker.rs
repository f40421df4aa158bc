//! The pipeline of one partition on a thread of its own: CPU work never blocks the tasks that
//! move bytes to and from NATS, and the two overlap. Checkpoints are serialised here too, off
//! the async runtime, streamed out in frames through a bounded channel.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ingest::Incoming;
use crate::pipeline::checkpoint::{CheckpointHeader, CheckpointWriter};
use crate::pipeline::{BatchOutput, Pipeline};
use crate::tools::clock;

/// Batches the pipeline thread may hold at once.
pub const MAX_IN_FLIGHT: usize = 2;

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
    pub seconds: f64,
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
    pub fn start(mut pipeline: Pipeline, partition: u32, mut processed_through: u64) -> Self {
        // Room for the batches, a checkpoint and a few series lookups.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(MAX_IN_FLIGHT + 8);
        std::thread::Builder::new()
            .name(format!("pipeline-p{partition}"))
            .spawn(move || {
                // The combined watermark visits every source: refreshed now and then, not
                // after every batch (it is only a gauge).
                let mut watermark = (i64::MIN, 0u32);
                let mut slo_minutes = 0;
                for job in rx {
                    match job {
                        Job::Process { mut batch, reply } => {
                            // Redeliveries of messages the state already covers are acked
                            // without processing.
                            batch.retain(|m| m.stream_seq > processed_through);
                            processed_through = batch
                                .iter()
                                .map(|m| m.stream_seq)
                                .fold(processed_through, u64::max);
                            let output = pipeline.process(&batch);
                            if watermark.1 % 64 == 0 {
                                watermark.0 = pipeline.watermark();
                            }
                            watermark.1 = watermark.1.wrapping_add(1);
                            let _ = reply.send(BatchDone {
                                batch,
                                output,
                                has_timers: pipeline.has_timers(),
                                series: pipeline.series_count(),
                                sources: pipeline.source_count(),
                                quarantined: pipeline.quarantined_count(),
                                watermark: watermark.0,
                                slos: (pipeline.slo_minutes() != slo_minutes).then(|| {
                                    slo_minutes = pipeline.slo_minutes();
                                    pipeline.slo_status()
                                }),
                            });
                        }
                        Job::Checkpoint {
                            partition,
                            last_seq,
                            sink,
                            reply,
                        } => {
                            let _ = reply.send(serialise(&pipeline, partition, last_seq, &sink));
                        }
                        Job::Describe { key, reply } => {
                            let _ = reply.send(pipeline.describe_series(&key));
                        }
                    }
                }
            })
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

    /// Serialises a checkpoint covering everything up to `last_seq` (call with no batch in
    /// flight) into `sink`, frame by frame; blocks the pipeline while the sink is full.
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

fn serialise(
    pipeline: &Pipeline,
    partition: u32,
    last_seq: u64,
    sink: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<Serialised, String> {
    let started = Instant::now();
    let header = CheckpointHeader {
        partition,
        last_seq,
        written_at_ms: clock::now_ms(),
        pipeline: pipeline.header(),
    };
    let mut receiver_gone = false;
    let mut writer = CheckpointWriter::new(&header, |b| {
        if !receiver_gone && sink.blocking_send(Ok(b)).is_err() {
            receiver_gone = true;
        }
    })
    .map_err(|e| e.to_string())?;
    let mut failed = None;
    pipeline.for_each_series(|s| {
        if failed.is_none() {
            if let Err(e) = writer.series(&s) {
                failed = Some(e.to_string());
            }
        }
    });
    if let Some(e) = failed {
        let _ = sink.blocking_send(Err(std::io::Error::other(e.clone())));
        return Err(e);
    }
    let series = writer.series;
    let bytes = writer.finish();
    Ok(Serialised {
        bytes,
        series,
        seconds: started.elapsed().as_secs_f64(),
    })
}
