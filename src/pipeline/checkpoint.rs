//! The checkpoint format: versioned, framed, written and read as a stream.
//!
//! ```text
//! "PWCP" | version: u32 LE
//! frame: len u32 LE | MessagePack CheckpointHeader
//! frame: len u32 LE | MessagePack SeriesSnapshot, SeriesSnapshot, ...   (≤ ~1 MiB each)
//! ...
//! frame: len 0                                                        (end: a cut-off
//!                                                                      checkpoint is unreadable)
//! ```
//!
//! Frames bound what either side holds at once: the writer serialises series one by one into
//! the current frame and hands it over when it reaches [`FRAME_BYTES`]; the reader decodes a frame
//! at a time. Pure: the byte transport is the caller's (see `processor::store`).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{PipelineHeader, SeriesSnapshot, SeriesView};

pub const MAGIC: &[u8; 4] = b"PWCP";
/// Bumped whenever the encoding of any state changes; older checkpoints are then unreadable
/// and the processor rebuilds its state from the stream (without re-publishing alerts).
pub const VERSION: u32 = 4;
/// A frame is handed over once it holds this many bytes.
pub const FRAME_BYTES: usize = 1 << 20;
/// Largest frame a reader accepts (a corrupt length must not allocate gigabytes).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// What a checkpoint says beside the series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub partition: u32,
    /// Every message of the partition up to this stream sequence is reflected in the state.
    pub last_seq: u64,
    /// Wall-clock time of writing, ms since the epoch (for operators; not used to decide).
    pub written_at_ms: i64,
    pub pipeline: PipelineHeader,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a PrismWatch checkpoint (bad magic bytes)")]
    BadMagic,
    #[error("checkpoint format version {found}, this build reads version {VERSION}")]
    Version { found: u32 },
    #[error("frame of {0} bytes is larger than {MAX_FRAME_BYTES}: corrupt")]
    FrameTooLarge(usize),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// What a checkpoint holds per series: a live series borrowed from its shard, or an owned
/// snapshot (both write the same bytes).
pub trait SeriesRecord: Serialize {}
impl SeriesRecord for SeriesView<'_> {}
impl SeriesRecord for SeriesSnapshot {}

/// Where a checkpoint's byte chunks go (the processor streams them to the object store). Shared:
/// while a checkpoint is written alongside the batches (see `Pipeline::begin_checkpoint`), each
/// shard hands over its own frames.
pub type FrameSink = std::sync::Arc<dyn Fn(Bytes) + Send + Sync>;

/// The checkpoint's last chunk: a frame of length 0.
pub const END: Bytes = Bytes::from_static(&[0, 0, 0, 0]);

/// The checkpoint's first chunks: the preamble, then the header's frame.
pub fn start(header: &CheckpointHeader) -> Result<[Bytes; 2], CheckpointError> {
    let mut pre = BytesMut::with_capacity(8);
    pre.put_slice(MAGIC);
    pre.put_u32_le(VERSION);
    let body =
        rmp_serde::to_vec_named(header).map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let mut f = BytesMut::with_capacity(body.len() + 4);
    f.put_u32_le(body.len() as u32);
    f.put_slice(&body);
    Ok([pre.freeze(), f.freeze()])
}

/// Series records gathered into frames: a frame is complete once it holds [`FRAME_BYTES`].
#[derive(Default)]
pub struct Frames {
    frame: BytesMut,
}

impl Frames {
    /// Adds one series; returns the frame it completed, if it did.
    pub fn push(&mut self, s: &impl SeriesRecord) -> Result<Option<Bytes>, CheckpointError> {
        if self.frame.is_empty() {
            self.frame.reserve(FRAME_BYTES + 4096);
            self.frame.put_u32_le(0); // length, patched when the frame is closed
        }
        let mut writer = (&mut self.frame).writer();
        rmp_serde::encode::write_named(&mut writer, s)
            .map_err(|e| CheckpointError::Encode(e.to_string()))?;
        if self.frame.len() < FRAME_BYTES {
            return Ok(None);
        }
        Ok(self.close())
    }

    /// The frame begun so far, closed (`None` when empty).
    pub fn close(&mut self) -> Option<Bytes> {
        if self.frame.is_empty() {
            return None;
        }
        let len = (self.frame.len() - 4) as u32;
        self.frame[..4].copy_from_slice(&len.to_le_bytes());
        Some(self.frame.split().freeze())
    }
}

/// Writes one shard's series of a checkpoint written alongside the batches (the shard decides
/// which and when); full frames go to the shared sink at once.
pub struct CutWriter {
    sink: FrameSink,
    frames: Frames,
    pub bytes: usize,
    pub series: u64,
    /// The first series that could not be encoded (the checkpoint is then abandoned).
    pub failed: Option<String>,
}

impl CutWriter {
    pub fn new(sink: FrameSink) -> Self {
        Self {
            sink,
            frames: Frames::default(),
            bytes: 0,
            series: 0,
            failed: None,
        }
    }

    pub fn write(&mut self, s: &impl SeriesRecord) {
        match self.frames.push(s) {
            Ok(Some(frame)) => self.hand_over(frame),
            Ok(None) => {}
            Err(e) => {
                self.failed.get_or_insert(e.to_string());
                return;
            }
        }
        self.series += 1;
    }

    /// Hands over the last, partly filled frame.
    pub fn close(&mut self) {
        if let Some(frame) = self.frames.close() {
            self.hand_over(frame);
        }
    }

    fn hand_over(&mut self, b: Bytes) {
        self.bytes += b.len();
        (self.sink)(b);
    }
}

/// Builds a checkpoint's bytes in one go, handing each chunk over through `sink`.
pub struct CheckpointWriter<F: FnMut(Bytes)> {
    sink: F,
    frames: Frames,
    /// Bytes handed over so far.
    pub bytes: usize,
    pub series: u64,
}

impl<F: FnMut(Bytes)> CheckpointWriter<F> {
    /// Starts a checkpoint with its header.
    pub fn new(header: &CheckpointHeader, sink: F) -> Result<Self, CheckpointError> {
        let mut w = Self {
            sink,
            frames: Frames::default(),
            bytes: 0,
            series: 0,
        };
        for chunk in start(header)? {
            w.hand_over(chunk);
        }
        Ok(w)
    }

    pub fn series(&mut self, s: &impl SeriesRecord) -> Result<(), CheckpointError> {
        if let Some(frame) = self.frames.push(s)? {
            self.hand_over(frame);
        }
        self.series += 1;
        Ok(())
    }

    /// Ends the checkpoint; returns its size in bytes.
    pub fn finish(mut self) -> usize {
        if let Some(frame) = self.frames.close() {
            self.hand_over(frame);
        }
        self.hand_over(END);
        self.bytes
    }

    fn hand_over(&mut self, b: Bytes) {
        self.bytes += b.len();
        (self.sink)(b);
    }
}

/// Checks the 8-byte preamble.
pub fn check_preamble(pre: &[u8; 8]) -> Result<(), CheckpointError> {
    if &pre[..4] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    let found = u32::from_le_bytes(pre[4..8].try_into().expect("4 bytes"));
    if found != VERSION {
        return Err(CheckpointError::Version { found });
    }
    Ok(())
}

/// A frame length; 0 ends the checkpoint.
pub fn frame_len(len: [u8; 4]) -> Result<usize, CheckpointError> {
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME_BYTES {
        return Err(CheckpointError::FrameTooLarge(n));
    }
    Ok(n)
}

pub fn decode_header(frame: &[u8]) -> Result<CheckpointHeader, CheckpointError> {
    rmp_serde::from_slice(frame).map_err(|e| CheckpointError::Decode(format!("header: {e}")))
}

/// The series of one frame.
pub fn decode_series(frame: &[u8]) -> Result<Vec<SeriesSnapshot>, CheckpointError> {
    let mut out = Vec::new();
    let mut cursor = std::io::Cursor::new(frame);
    while (cursor.position() as usize) < frame.len() {
        let mut de = rmp_serde::Deserializer::new(&mut cursor);
        out.push(
            SeriesSnapshot::deserialize(&mut de)
                .map_err(|e| CheckpointError::Decode(format!("series: {e}")))?,
        );
    }
    Ok(out)
}

/// Decodes a whole checkpoint held in memory (tests and tools).
pub fn decode_all(
    bytes: &[u8],
) -> Result<(CheckpointHeader, Vec<SeriesSnapshot>), CheckpointError> {
    let pre: &[u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointError::Truncated("preamble"))?;
    check_preamble(pre)?;
    let mut rest = &bytes[8..];
    let header = decode_header(take_frame(&mut rest)?)?;
    let mut series = Vec::new();
    loop {
        let frame = take_frame(&mut rest)?;
        if frame.is_empty() {
            return Ok((header, series));
        }
        series.extend(decode_series(frame)?);
    }
}

fn take_frame<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], CheckpointError> {
    let bytes: &'a [u8] = rest;
    let len: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointError::Truncated("frame length"))?;
    let n = frame_len(len)?;
    let frame = bytes
        .get(4..4 + n)
        .ok_or(CheckpointError::Truncated("frame"))?;
    *rest = &bytes[4 + n..];
    Ok(frame)
}
