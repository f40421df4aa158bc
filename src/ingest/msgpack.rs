//! The usual MessagePack shape of metric messages, read straight off the bytes with `rmp`'s
//! primitives: a point is a map `{name, labels, value, timestamp}` (what rmp-serde's
//! `to_vec_named` and most publishers write), a batch an array of such maps. A point's name and
//! labels are only framed here, left encoded: the decoder finds a known series by those bytes
//! and reads them ([`read_series`]) only for a series it has not seen. Strings are borrowed
//! from the payload.
//!
//! Anything else (positional points, integer values, unknown or repeated keys, trailing bytes,
//! anything malformed) gives `false`, and the caller decodes with serde as before: this path only
//! ever accepts what the serde path would decode to the same points. It skips the serde derive's
//! per-field `deserialize_any` dispatch; with the known series (`known.rs`), `cargo bench
//! --bench backtest`'s evaluation alone went from 2.8 to 5.5 M points/s.

use std::borrow::Cow;

use rmp::decode::{read_array_len, read_f64, read_int, read_map_len, read_str_from_slice};
use rmp::Marker;

use super::raw::{Label, RawPoint, RawSeries, Scratch};

/// Parses a MessagePack payload in the usual shape into `out` (cleared first) and returns
/// true; or returns false with `out` empty (decode with serde).
pub fn points<'a>(payload: &'a [u8], out: &mut Scratch<'a>) -> bool {
    out.clear();
    let parsed = parse(payload, out).is_some();
    if !parsed {
        out.clear();
    }
    parsed
}

fn parse<'a>(payload: &'a [u8], out: &mut Scratch<'a>) -> Option<()> {
    let mut rd = payload;
    let first = *rd.first()?;
    match Marker::from_u8(first) {
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let n = read_array_len(&mut rd).ok()? as usize;
            // A claimed length is not trusted beyond what the bytes can hold.
            out.points.reserve(n.min(rd.len() / 16 + 1));
            for _ in 0..n {
                point(&mut rd, out)?;
            }
        }
        _ => point(&mut rd, out)?,
    }
    rd.is_empty().then_some(())
}

fn point<'a>(rd: &mut &'a [u8], out: &mut Scratch<'a>) -> Option<()> {
    if !matches!(
        Marker::from_u8(*rd.first()?),
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32
    ) {
        return None;
    }
    let fields = read_map_len(rd).ok()?;
    let (mut name, mut labels, mut value, mut timestamp) = (None, None, None, None);
    for _ in 0..fields {
        // Field names are matched as bytes: only these four ASCII names are taken, so no UTF-8
        // check is needed for them.
        let slot_taken = match field_name(rd)? {
            b"name" => name.replace(framed_str(rd)?).is_some(),
            b"labels" => labels.replace(framed_labels(rd)?).is_some(),
            b"value" => value.replace(number(rd)?).is_some(),
            b"timestamp" => timestamp.replace(read_int::<i64, _>(rd).ok()?).is_some(),
            _ => return None,
        };
        if slot_taken {
            return None;
        }
    }
    out.points.push(RawPoint {
        series: RawSeries::Encoded {
            name: name?,
            labels: labels.unwrap_or_default(),
        },
        value: value?,
        timestamp: timestamp?,
    });
    Some(())
}

/// Reads a name and labels framed by [`points`]: the name, with the labels appended to
/// `labels`; `None` when a string is not UTF-8 (serde then refuses the message).
pub fn read_series<'a>(
    name: &'a [u8],
    encoded_labels: &'a [u8],
    labels: &mut Vec<Label<'a>>,
) -> Option<&'a str> {
    let (name, _) = read_str_from_slice(name).ok()?;
    let mut rd = encoded_labels;
    if let Some(Marker::FixMap(_) | Marker::Map16 | Marker::Map32) =
        rd.first().map(|&b| Marker::from_u8(b))
    {
        let n = read_map_len(&mut rd).ok()?;
        for _ in 0..n {
            let k = string(&mut rd)?;
            let v = string(&mut rd)?;
            labels.push((Cow::Borrowed(k), Cow::Borrowed(v)));
        }
    }
    Some(name)
}

/// The bytes of a string value, header included, without reading it.
fn framed_str<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = *rd;
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    *rd = rd.get(len..)?;
    Some(&start[..start.len() - rd.len()])
}

/// The bytes of a labels value (nil, or a map of strings to strings), without reading them.
fn framed_labels<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = *rd;
    match Marker::from_u8(*rd.first()?) {
        Marker::Null => *rd = &rd[1..],
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            let n = read_map_len(rd).ok()?;
            for _ in 0..2 * n {
                framed_str(rd)?;
            }
        }
        _ => return None,
    }
    Some(&start[..start.len() - rd.len()])
}

fn field_name<'a>(rd: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    let (name, rest) = (rd.get(..len)?, rd.get(len..)?);
    *rd = rest;
    Some(name)
}

fn string<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    let (s, rest) = read_str_from_slice(*rd).ok()?;
    *rd = rest;
    Some(s)
}

/// A value written as a float (f64, or f32 as some publishers send); integers go to serde.
fn number(rd: &mut &[u8]) -> Option<f64> {
    match Marker::from_u8(*rd.first()?) {
        Marker::F64 => read_f64(rd).ok(),
        Marker::F32 => rmp::decode::read_f32(rd).ok().map(f64::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{MetricPoint, WirePoint};

    /// A point as a comparable value (NaN equals NaN here).
    type Plain = (String, Vec<(String, String)>, u64, i64);

    fn plain_wire(points: Option<Vec<WirePoint<'_>>>) -> Option<Vec<Plain>> {
        points.map(|v| {
            let mut s = Scratch::default();
            for p in v {
                s.push_wire(p);
            }
            plain(&s).expect("serde's points are read")
        })
    }

    /// The points as values; `None` when a framed name or label is not UTF-8.
    fn plain(s: &Scratch<'_>) -> Option<Vec<Plain>> {
        let mut out = Vec::new();
        for p in &s.points {
            let mut labels = Vec::new();
            let name = match &p.series {
                RawSeries::Encoded { name, labels: l } => {
                    read_series(name, l, &mut labels)?.to_string()
                }
                RawSeries::Read { name, labels: l } => {
                    labels.extend(s.labels[l.clone()].iter().cloned());
                    name.to_string()
                }
            };
            let labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out.push((name, labels, p.value.to_bits(), p.timestamp));
        }
        Some(out)
    }

    /// The fast path's points, or `None` when it leaves the payload to serde (a string that is
    /// not UTF-8 is found when the series is read).
    fn fast(payload: &[u8]) -> Option<Vec<Plain>> {
        let mut s = Scratch::default();
        let taken = points(payload, &mut s);
        assert!(taken || s.points.is_empty() && s.labels.is_empty());
        if taken {
            plain(&s)
        } else {
            None
        }
    }

    /// What the serde path gives for the same bytes (the reference).
    fn serde_points(payload: &[u8]) -> Option<Vec<WirePoint<'_>>> {
        let is_array = matches!(payload.first()?, 0x90..=0x9f | 0xdc | 0xdd);
        if is_array {
            rmp_serde::from_slice::<Vec<WirePoint>>(payload).ok()
        } else {
            rmp_serde::from_slice::<WirePoint>(payload)
                .ok()
                .map(|p| vec![p])
        }
    }

    fn metric_point() -> impl Strategy<Value = MetricPoint> {
        (
            "[a-z_][a-z0-9_.:]{0,12}",
            proptest::collection::btree_map("[a-z_][a-z0-9_]{0,6}", ".{0,8}", 0..4),
            proptest::num::f64::ANY,
            any::<i64>(),
        )
            .prop_map(|(name, labels, value, timestamp)| MetricPoint {
                name,
                labels,
                value,
                timestamp,
            })
    }

    proptest! {
        #[test]
        fn named_points_and_batches_decode_as_serde_does(
            sent in proptest::collection::vec(metric_point(), 1..6),
            batch in any::<bool>(),
        ) {
            let payload = if batch || sent.len() > 1 {
                rmp_serde::to_vec_named(&sent).unwrap()
            } else {
                rmp_serde::to_vec_named(&sent[0]).unwrap()
            };
            let fast = fast(&payload);
            prop_assert!(fast.is_some(), "the usual shape takes the fast path");
            prop_assert_eq!(fast, plain_wire(serde_points(&payload)));
        }

        #[test]
        fn any_bytes_decode_as_serde_does_or_go_to_serde(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(fast) = fast(&bytes) {
                prop_assert_eq!(Some(fast), plain_wire(serde_points(&bytes)));
            }
        }

        #[test]
        fn mangled_points_decode_as_serde_does_or_go_to_serde(
            p in metric_point(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut payload = rmp_serde::to_vec_named(&p).unwrap();
            let i = at.index(payload.len());
            payload[i] = byte;
            if let Some(fast) = fast(&payload) {
                prop_assert_eq!(Some(fast), plain_wire(serde_points(&payload)));
            }
        }
    }

    #[test]
    fn other_shapes_go_to_serde() {
        let p = MetricPoint {
            name: "cpu".into(),
            labels: BTreeMap::from([("host".into(), "a".into())]),
            value: 1.5,
            timestamp: 1_700_000_000_000,
        };
        // Positional (rmp-serde's default struct encoding).
        assert!(fast(&rmp_serde::to_vec(&p).unwrap()).is_none());
        // An integer value, an unknown key, trailing bytes.
        #[derive(serde::Serialize)]
        struct IntValue<'a> {
            name: &'a str,
            value: i64,
            timestamp: i64,
        }
        let int = rmp_serde::to_vec_named(&IntValue {
            name: "cpu",
            value: 3,
            timestamp: 5,
        })
        .unwrap();
        assert!(fast(&int).is_none());
        assert_eq!(serde_points(&int).unwrap()[0].value, 3.0);
        #[derive(serde::Serialize)]
        struct Extra<'a> {
            name: &'a str,
            value: f64,
            timestamp: i64,
            unit: &'a str,
        }
        let extra = rmp_serde::to_vec_named(&Extra {
            name: "cpu",
            value: 3.0,
            timestamp: 5,
            unit: "%",
        })
        .unwrap();
        assert!(fast(&extra).is_none());
        let mut trailing = rmp_serde::to_vec_named(&p).unwrap();
        trailing.push(0xc0);
        assert!(fast(&trailing).is_none());
        // The usual shape, labels null.
        #[derive(serde::Serialize)]
        struct NullLabels<'a> {
            name: &'a str,
            labels: Option<()>,
            value: f64,
            timestamp: i64,
        }
        let null = rmp_serde::to_vec_named(&NullLabels {
            name: "cpu",
            labels: None,
            value: 2.0,
            timestamp: 5,
        })
        .unwrap();
        assert_eq!(fast(&null), plain_wire(serde_points(&null)));
        assert!(fast(&null).unwrap()[0].1.is_empty());
    }
}
