//! Where a backtest's history comes from: a range of `PRISM_METRICS`, or a file of points in the
//! `publish --file` formats, cut into the very messages `publish --file` would send.

use std::path::Path;

use async_nats::jetstream;
use bytes::Bytes;

use crate::config::Config;
use crate::ingest::{Encoding, Incoming};
use crate::processor::replay;
use crate::subjects;
use crate::tools::publish::{self, TimestampUnit};

/// A time range (ms since the epoch, both ends inclusive, either open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeRange {
    fn contains(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t <= to)
    }
}

/// What is replayed.
pub enum History {
    /// Stream sequences `from..=to` of `PRISM_METRICS`, on the stored subjects `filters`.
    Stream {
        js: Box<jetstream::Context>,
        from: u64,
        to: Option<u64>,
        filters: Vec<String>,
        describe: String,
    },
    /// Messages made from a file, in its order.
    File {
        messages: Vec<Incoming>,
        describe: String,
    },
}

impl History {
    /// The stream's messages stored in `range` (JetStream start-by-time), or the sequences
    /// given, on the subjects `subject_filters` (published form; empty: all).
    pub async fn stream(
        js: jetstream::Context,
        cfg: &Config,
        range: TimeRange,
        seqs: (u64, Option<u64>),
        subject_filters: &[String],
    ) -> anyhow::Result<History> {
        let (from, to) = if range.from.is_some() || range.to.is_some() {
            let (f, t) = replay::seq_range_of_times(&js, cfg, range.from, range.to).await?;
            (f, t.or(seqs.1))
        } else {
            seqs
        };
        let mut describe = format!(
            "stream {}, messages {from}..{}",
            cfg.streams.metrics.name,
            to.map_or("end".to_string(), |t| t.to_string())
        );
        if !subject_filters.is_empty() {
            describe += &format!(" on {}", subject_filters.join(", "));
        }
        Ok(History::Stream {
            js: Box::new(js),
            from,
            to,
            filters: replay::stored_filters(subject_filters)?,
            describe,
        })
    }

    /// The points of a CSV or JSON-lines file with event times in `range`, on the subjects
    /// `subject_filters`, cut into messages of `batch` points as `publish --file --batch`
    /// sends them. Every message counts as stored when the file's newest point was measured:
    /// the stream time a fast `publish --file` gives (see the README on what that implies).
    pub fn file(
        path: &Path,
        unit: TimestampUnit,
        batch: usize,
        range: TimeRange,
        subject_filters: &[String],
    ) -> anyhow::Result<History> {
        let points: Vec<_> = publish::read_points(path, unit)?
            .into_iter()
            .filter(|p| range.contains(p.timestamp))
            .filter(|p| {
                let subject = publish::subject_for(p);
                subject_filters.is_empty()
                    || subject_filters.iter().any(|f| {
                        let f = if f.starts_with(subjects::METRICS_PREFIX) {
                            f.clone()
                        } else {
                            format!("{}.{f}", subjects::METRICS_PREFIX)
                        };
                        subjects::filter_matches(&f, &subject)
                    })
            })
            .collect();
        anyhow::ensure!(
            !points.is_empty(),
            "empty range: no point of {} in the time range and subjects given",
            path.display()
        );
        let stored_at = points.iter().map(|p| p.timestamp).max().unwrap_or(0);
        let messages = publish::messages(&points, batch, Encoding::MsgPack, None)?
            .into_iter()
            .enumerate()
            .map(|(i, m)| Incoming {
                subject: m.subject.into(),
                payload: Bytes::from(m.payload),
                content_type: Some(m.content_type.into()),
                stream_seq: i as u64 + 1,
                published_ms: stored_at,
            })
            .collect::<Vec<_>>();
        let describe = format!("file {}", path.display());
        Ok(History::File { messages, describe })
    }

    pub fn describe(&self) -> &str {
        match self {
            History::Stream { describe, .. } | History::File { describe, .. } => describe,
        }
    }

    /// Reads the history in order, in chunks: `sink(chunk, messages still to come)`.
    pub async fn read(
        &self,
        cfg: &Config,
        mut sink: impl FnMut(Vec<Incoming>, u64) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        match self {
            History::Stream {
                js,
                from,
                to,
                filters,
                ..
            } => replay::read_range(js, cfg, *from, *to, filters, sink).await,
            History::File { messages, .. } => {
                let mut left = messages.len() as u64;
                for chunk in messages.chunks(512) {
                    left -= chunk.len() as u64;
                    sink(chunk.to_vec(), left)?;
                }
                Ok(messages.len() as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_cut_into_publish_messages_within_the_range_and_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.csv");
        std::fs::write(
            &path,
            "timestamp,name,value,exchange\n\
             1000,rate,1,binance\n2000,rate,2,binance\n2000,rate,5,okx\n3000,rate,3,binance\n",
        )
        .unwrap();
        let all = History::file(&path, TimestampUnit::Ms, 2, TimeRange::default(), &[]);
        let History::File { messages, describe } = all.unwrap() else {
            panic!("a file history")
        };
        assert_eq!(messages.len(), 2, "4 points in messages of 2");
        assert_eq!(describe, format!("file {}", path.display()));
        assert_eq!(
            messages[0].subject.as_str(),
            "prism.metrics.exchange.binance.rate"
        );
        assert!(messages.iter().all(|m| m.published_ms == 3000));
        assert_eq!(messages[1].stream_seq, 2);

        let range = TimeRange {
            from: Some(2000),
            to: Some(2000),
        };
        let some = History::file(
            &path,
            TimestampUnit::Ms,
            1,
            range,
            &["exchange.okx.>".into()],
        );
        let History::File { messages, .. } = some.unwrap() else {
            panic!("a file history")
        };
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].subject.as_str(),
            "prism.metrics.exchange.okx.rate"
        );
        let none = History::file(&path, TimestampUnit::Ms, 1, range, &["host.>".into()]);
        assert!(none.err().unwrap().to_string().contains("empty range"));
    }
}
