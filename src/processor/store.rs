//! Checkpoint storage: one object per partition in the `PRISM_CHECKPOINTS` object store, written
//! as a stream of frames (see `pipeline::checkpoint`) and read back frame by frame.

use std::time::Instant;

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::ProcessorError;
use crate::pipeline::checkpoint::{self, CheckpointError, CheckpointHeader};
use crate::pipeline::{Pipeline, SeriesSnapshot};
use crate::{subjects, telemetry};

pub struct CheckpointStore {
    store: object_store::ObjectStore,
}

/// Why no checkpoint was restored.
#[derive(Debug)]
pub enum NoCheckpoint {
    Missing,
    Unreadable(String),
}

impl CheckpointStore {
    /// Opens (creating if needed) the bucket.
    pub async fn open(js: &jetstream::Context) -> Result<Self, ProcessorError> {
        let store = match js.get_object_store(subjects::CHECKPOINT_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: subjects::CHECKPOINT_BUCKET.to_string(),
                    description: Some("PrismWatch pipeline checkpoints, one per partition".into()),
                    ..Default::default()
                })
                .await
                .map_err(ProcessorError::nats("create the checkpoint bucket"))?,
        };
        Ok(Self { store })
    }

    /// The object name of a partition's checkpoint.
    pub fn object_name(group: &str, partition: u32) -> String {
        format!("{group}-{partition}")
    }

    /// Restores `pipeline` from the partition's checkpoint, frame by frame; returns its header.
    /// A missing or unreadable checkpoint leaves `pipeline` empty and says why.
    pub async fn load(
        &self,
        name: &str,
        pipeline: &mut Pipeline,
    ) -> Result<Result<CheckpointHeader, NoCheckpoint>, ProcessorError> {
        let mut obj = match self.store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                return Ok(Err(NoCheckpoint::Missing))
            }
            Err(e) => return Err(ProcessorError::Nats(format!("read checkpoint {name}: {e}"))),
        };
        let started = Instant::now();
        let mut bytes = 0usize;
        let result: Result<CheckpointHeader, CheckpointError> = async {
            let mut pre = [0u8; 8];
            read_exact(&mut obj, &mut pre).await?;
            checkpoint::check_preamble(&pre)?;
            let header = checkpoint::decode_header(&read_frame(&mut obj, &mut bytes).await?)?;
            tokio::task::block_in_place(|| pipeline.restore_header(header.pipeline.clone()));
            loop {
                let frame = read_frame(&mut obj, &mut bytes).await?;
                if frame.is_empty() {
                    break;
                }
                let series: Vec<SeriesSnapshot> =
                    tokio::task::block_in_place(|| checkpoint::decode_series(&frame))?;
                tokio::task::block_in_place(|| pipeline.restore_series(series));
            }
            // The object store checks its digest when the object is read to its end.
            let mut rest = Vec::new();
            obj.read_to_end(&mut rest)
                .await
                .map_err(|e| CheckpointError::Decode(e.to_string()))?;
            Ok(header)
        }
        .await;
        match result {
            Ok(h) => {
                tracing::info!(
                    checkpoint = name,
                    bytes,
                    series = pipeline.series_count(),
                    seconds = started.elapsed().as_secs_f64(),
                    "checkpoint restored"
                );
                Ok(Ok(h))
            }
            Err(e) => Ok(Err(NoCheckpoint::Unreadable(e.to_string()))),
        }
    }

    /// Writes a checkpoint from a stream of byte chunks (the pipeline thread produces them);
    /// the previous checkpoint stays until the new one is complete. Returns the bytes written.
    pub async fn save(
        &self,
        name: &str,
        chunks: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<usize, ProcessorError> {
        let started = Instant::now();
        let stream = futures::stream::unfold(chunks, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        let info = self
            .store
            .put(name, &mut reader)
            .await
            .map_err(|e| ProcessorError::Nats(format!("write checkpoint {name}: {e}")))?;
        let secs = started.elapsed().as_secs_f64();
        metrics::counter!(telemetry::CHECKPOINTS).increment(1);
        metrics::gauge!(telemetry::CHECKPOINT_BYTES).set(info.size as f64);
        metrics::histogram!(telemetry::CHECKPOINT_DURATION).record(secs);
        tracing::debug!(
            checkpoint = name,
            bytes = info.size,
            seconds = secs,
            "checkpoint written"
        );
        Ok(info.size)
    }

    pub async fn delete(&self, name: &str) -> Result<(), ProcessorError> {
        match self.store.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProcessorError::Nats(format!(
                "delete checkpoint {name}: {e}"
            ))),
        }
    }
}

async fn read_exact(obj: &mut object_store::Object, buf: &mut [u8]) -> Result<(), CheckpointError> {
    obj.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => CheckpointError::Truncated("object ends early"),
            _ => CheckpointError::Decode(e.to_string()),
        })
}

async fn read_frame(
    obj: &mut object_store::Object,
    total: &mut usize,
) -> Result<Vec<u8>, CheckpointError> {
    let mut len = [0u8; 4];
    read_exact(obj, &mut len).await?;
    let n = checkpoint::frame_len(len)?;
    let mut frame = vec![0u8; n];
    read_exact(obj, &mut frame).await?;
    *total += 4 + n;
    Ok(frame)
}
