//! Points as parsed, before validation: strings borrowed from the payload where the format
//! allows (MessagePack's name and labels left encoded until they are needed), the labels of
//! every point of a message in one shared list. Reused from message to
//! message, so decoding a point allocates nothing once the buffers have grown.

use std::borrow::Cow;
use std::ops::Range;

use crate::model::WirePoint;

/// A label pair as parsed (borrowed from the payload unless the format escaped it).
pub type Label<'a> = (Cow<'a, str>, Cow<'a, str>);

/// One parsed point.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPoint<'a> {
    pub series: RawSeries<'a>,
    pub value: f64,
    pub timestamp: i64,
}

/// A point's series as parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSeries<'a> {
    /// The MessagePack bytes of the `name` value (a string) and of the `labels` value (nil or
    /// a map of strings), framed but not yet read: a known series is found by them.
    Encoded { name: &'a [u8], labels: &'a [u8] },
    /// Read: the name, and the labels in `Scratch::labels[labels]`.
    Read {
        name: Cow<'a, str>,
        labels: Range<usize>,
    },
}

/// The parsed points of one message and their labels.
#[derive(Debug, Default)]
pub struct Scratch<'a> {
    pub points: Vec<RawPoint<'a>>,
    pub labels: Vec<Label<'a>>,
}

impl<'a> Scratch<'a> {
    pub fn clear(&mut self) {
        self.points.clear();
        self.labels.clear();
    }

    /// Appends a point decoded by serde (the slower path for every other shape).
    pub fn push_wire(&mut self, p: WirePoint<'a>) {
        let start = self.labels.len();
        self.labels.extend(p.labels.0);
        self.points.push(RawPoint {
            series: RawSeries::Read {
                name: p.name,
                labels: start..self.labels.len(),
            },
            value: p.value,
            timestamp: p.timestamp,
        });
    }
}
