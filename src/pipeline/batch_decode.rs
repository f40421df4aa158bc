//! The first stage of a batch: every message decoded and validated, before anything is ordered
//! in time. Decoding is pure, so with several shards the batch is cut into contiguous chunks
//! decoded at once on the persistent rayon pool (each chunk with a decoder of its own); the
//! next stage reads the results in message order, so what comes out does not depend on the
//! chunking.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use foldhash::fast::RandomState;

use crate::ingest::{Decoded, Decoder, Incoming, IngestConfig, Reject, RejectReason, Scratch};
use crate::subjects;

/// Below this many payload bytes a batch is decoded on the calling thread: handing chunks to
/// the pool costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 64 * 1024;

/// What one message of a batch decoded to.
#[derive(Debug)]
pub enum MessageOutcome {
    /// A partition's tick: no points.
    Tick,
    /// Refused whole.
    Refused(Reject),
    /// Its source (`<domain>.<source>`, as bytes of its subject), and its valid points and
    /// rejected points, in its chunk's [`Decoded`].
    Points {
        source: Range<usize>,
        points: Range<usize>,
        rejects: Range<usize>,
    },
}

/// One chunk: a decoder and what it made of its messages.
#[derive(Debug)]
pub struct Chunk {
    decoder: Decoder,
    pub decoded: Decoded,
    pub outcomes: Vec<MessageOutcome>,
    /// Where this chunk's keys start in the batch's key buffer (chunk 0's `decoded.keys`).
    pub key_offset: usize,
}

#[derive(Debug)]
pub struct BatchDecoder {
    limits: IngestConfig,
    pub chunks: Vec<Chunk>,
}

impl BatchDecoder {
    /// `workers` chunks at most (the pipeline's shard count).
    pub fn new(limits: &IngestConfig, series_hasher: &RandomState, workers: usize) -> Self {
        Self {
            limits: limits.clone(),
            chunks: (0..workers.max(1))
                .map(|_| Chunk {
                    decoder: Decoder::new(limits, series_hasher.clone()),
                    decoded: Decoded::default(),
                    outcomes: Vec::new(),
                    key_offset: 0,
                })
                .collect(),
        }
    }

    pub fn limits(&self) -> &IngestConfig {
        &self.limits
    }

    /// Decodes every message of `batch`; the outcomes of chunk after chunk are the messages in
    /// order, and every key is in [`BatchDecoder::keys`].
    pub fn decode(&mut self, batch: &[Incoming]) {
        let bytes: usize = batch.iter().map(|m| m.payload.len()).sum();
        let used = if bytes < PARALLEL_MIN_BYTES {
            1
        } else {
            self.chunks.len().min(batch.len()).max(1)
        };
        for c in &mut self.chunks {
            c.decoded.keys.clear();
            c.decoded.points.clear();
            c.decoded.rejects.clear();
            c.outcomes.clear();
            c.key_offset = 0;
        }
        let per_chunk = batch.len().div_ceil(used);
        if used == 1 {
            decode_chunk(&mut self.chunks[0], batch);
        } else {
            rayon::in_place_scope(|s| {
                let mut jobs = self.chunks.iter_mut().zip(batch.chunks(per_chunk));
                let first = jobs.next();
                for (chunk, messages) in jobs {
                    s.spawn(move |_| decode_chunk(chunk, messages));
                }
                if let Some((chunk, messages)) = first {
                    decode_chunk(chunk, messages);
                }
            });
        }
        // One key buffer for the batch: the other chunks' keys follow chunk 0's.
        let (first, rest) = self.chunks.split_at_mut(1);
        for c in rest.iter_mut().filter(|c| !c.outcomes.is_empty()) {
            c.key_offset = first[0].decoded.keys.len();
            first[0].decoded.keys.push_str(&c.decoded.keys);
        }
    }

    /// The canonical keys of the batch's points (a point's key is at its chunk's
    /// `key_offset` plus its own range).
    pub fn keys(&self) -> &str {
        &self.chunks[0].decoded.keys
    }
}

fn decode_chunk(chunk: &mut Chunk, messages: &[Incoming]) {
    let mut scratch = Scratch::default();
    let Chunk {
        decoder,
        decoded,
        outcomes,
        ..
    } = chunk;
    for m in messages {
        // The subject is read once, here: the order stage takes the source from the outcome.
        let source = match subjects::parse_stored(&m.subject) {
            Some(s) if s.tick => {
                outcomes.push(MessageOutcome::Tick);
                continue;
            }
            Some(s) => {
                let start = s.source.as_ptr().addr() - m.subject.as_ptr().addr();
                start..start + s.source.len()
            }
            // Not a subject of the contract (the stream only stores those): one source.
            None => 0..m.subject.len(),
        };
        let (points, rejects) = (decoded.points.len(), decoded.rejects.len());
        // Decoding is pure and must not panic; if it ever does, the message is refused, not
        // the process.
        let result = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode(
                &m.payload,
                m.content_type.as_deref(),
                m.published_ms,
                &mut scratch,
                decoded,
            )
        }))
        .unwrap_or_else(|_| {
            Err(Reject {
                reason: RejectReason::Panic,
                detail: "decoding panicked".into(),
            })
        });
        outcomes.push(match result {
            Ok(()) => MessageOutcome::Points {
                source,
                points: points..decoded.points.len(),
                rejects: rejects..decoded.rejects.len(),
            },
            Err(r) => {
                // A panic may have left part of the message behind.
                decoded.points.truncate(points);
                decoded.rejects.truncate(rejects);
                MessageOutcome::Refused(r)
            }
        });
    }
}
