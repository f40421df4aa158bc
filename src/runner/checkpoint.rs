//! Checkpoints: the pipeline snapshot and the last processed stream sequence, as one MessagePack
//! object in the `PRISM_CHECKPOINTS` object store (KV values are too small for many series).

use async_nats::jetstream::{self, object_store};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::pipeline::PipelineSnapshot;
use crate::{subjects, telemetry};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every message up to this stream sequence is reflected in `pipeline`.
    pub last_seq: u64,
    pub pipeline: PipelineSnapshot,
}

pub struct CheckpointStore {
    store: object_store::ObjectStore,
    name: String,
}

impl CheckpointStore {
    /// Opens (creating if needed) the bucket; `name` is the consumer's name.
    pub async fn open(js: &jetstream::Context, name: &str) -> anyhow::Result<Self> {
        let store = match js.get_object_store(subjects::CHECKPOINT_BUCKET).await {
            Ok(s) => s,
            Err(_) => {
                js.create_object_store(object_store::Config {
                    bucket: subjects::CHECKPOINT_BUCKET.to_string(),
                    description: Some("PrismWatch pipeline checkpoints".into()),
                    ..Default::default()
                })
                .await?
            }
        };
        Ok(Self {
            store,
            name: name.to_string(),
        })
    }

    pub async fn load(&self) -> anyhow::Result<Option<Checkpoint>> {
        let mut obj = match self.store.get(&self.name).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = Vec::new();
        obj.read_to_end(&mut buf).await?;
        match rmp_serde::from_slice(&buf) {
            Ok(cp) => Ok(Some(cp)),
            Err(e) => {
                // An unreadable checkpoint (e.g. from an incompatible version) means starting over
                // from the stream, which is slower but correct.
                tracing::warn!(error = %e, "ignoring unreadable checkpoint");
                Ok(None)
            }
        }
    }

    /// Writes the checkpoint; a failure is logged and retried at the next interval.
    pub async fn save(&self, cp: &Checkpoint) {
        let bytes = match rmp_serde::to_vec_named(cp) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise checkpoint");
                return;
            }
        };
        let mut reader = bytes.as_slice();
        match self.store.put(self.name.as_str(), &mut reader).await {
            Ok(_) => metrics::counter!(telemetry::CHECKPOINTS).increment(1),
            Err(e) => tracing::warn!(error = %e, "checkpoint write failed"),
        }
    }
}
