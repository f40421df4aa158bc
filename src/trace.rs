//! Distributed traces (OpenTelemetry): a metric message's way through PrismWatch as spans of one
//! trace: `prismwatch.ingest` (the message read), `prismwatch.evaluate` (its batch through the
//! pipeline), `prismwatch.alert.publish` (each alert event it caused), `prismwatch.manager.receive`
//! and `prismwatch.manager.notify` (the alert manager), `prismwatch.notify.deliver` (a channel's
//! delivery). W3C `traceparent` headers carry the context on the NATS messages between them,
//! and a publisher's own `traceparent` makes its trace continue into ours.
//!
//! Off by default: `telemetry.otlp_endpoint` turns the OTLP/HTTP export on (in a binary built
//! with the `otlp` feature). Sampled before any span is made, so the hot path pays a header
//! lookup per message: a message whose publisher sampled it (flag `01`), and
//! `telemetry.trace_sample_ratio` of the others (by stream sequence).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The W3C trace-context header.
pub const HEADER: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);
/// A message without a publisher's decision is traced when `hash(seq) < this`.
static RATIO_BELOW: AtomicU64 = AtomicU64::new(0);

/// Whether traces are exported (one relaxed load: the hot path's whole cost when off).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The header's name, made once: a lookup by `&str` builds (and allocates) a name each time.
static NAME: std::sync::LazyLock<async_nats::header::HeaderName> =
    std::sync::LazyLock::new(|| HEADER.parse().expect("a valid header name"));

/// A `traceparent` value as the propagator reads it.
struct Value<'a>(&'a str);

impl Extractor for Value<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == HEADER).then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec![HEADER]
    }
}

/// A message's `traceparent` value, if it has one.
fn header(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(NAME.clone()).map(|v| v.as_str())
}

/// The remote context of a `traceparent` value, if it is valid and sampled.
fn parse(value: &str) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&Value(value));
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(cx)
}

struct Out(Option<String>);

impl Injector for Out {
    fn set(&mut self, key: &str, value: String) {
        if key == HEADER {
            self.0 = Some(value);
        }
    }
}

/// The `traceparent` value of a context.
pub fn traceparent(cx: &Context) -> Option<String> {
    let mut out = Out(None);
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0
}

/// The remote context a message's `traceparent` header carries, if valid and sampled.
fn remote(headers: Option<&HeaderMap>) -> Option<Context> {
    parse(header(headers)?)
}

/// A context from a stored `traceparent` value.
pub fn context_of(traceparent: &str) -> Option<Context> {
    parse(traceparent)
}

/// Spans are in wall time (what trace viewers show), from the one wall clock of the crate.
fn wall_now() -> SystemTime {
    SystemTime::UNIX_EPOCH
        + std::time::Duration::from_millis(crate::tools::clock::now_ms().max(0) as u64)
}

fn tracer() -> global::BoxedTracer {
    global::tracer("prismwatch")
}

/// Starts a span `name` under `parent`, at `start`.
fn start(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    start: SystemTime,
    attributes: Vec<KeyValue>,
) -> global::BoxedSpan {
    let tracer = tracer();
    tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent)
}

/// A sampled message: its ingest span's context and when it was read.
#[derive(Clone)]
pub struct Traced {
    pub stream_seq: u64,
    pub cx: Context,
    pub read_at: SystemTime,
}

/// The ingest span of a message read from the metrics stream, when it is sampled.
pub fn ingest(headers: Option<&HeaderMap>, subject: &str, stream_seq: u64) -> Option<Traced> {
    if !enabled() {
        return None;
    }
    let parent = match header(headers) {
        // A publisher's decision stands: its unsampled trace is left alone.
        Some(value) => parse(value)?,
        None => {
            let h = stream_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            if h >= RATIO_BELOW.load(Ordering::Relaxed) {
                return None;
            }
            Context::new()
        }
    };
    let now = wall_now();
    let mut span = start(
        "prismwatch.ingest",
        SpanKind::Consumer,
        &parent,
        now,
        vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.destination.name", subject.to_string()),
            KeyValue::new("messaging.message.id", stream_seq.to_string()),
        ],
    );
    span.end_with_timestamp(now);
    Some(Traced {
        stream_seq,
        cx: parent.with_remote_span_context(span.span_context().clone()),
        read_at: now,
    })
}

/// The evaluation span of a traced message's batch; returns its context.
pub fn evaluated(t: &Traced, points: u64, events: usize) -> Context {
    let mut span = start(
        "prismwatch.evaluate",
        SpanKind::Internal,
        &t.cx,
        t.read_at,
        vec![
            KeyValue::new("prismwatch.batch.points", points as i64),
            KeyValue::new("prismwatch.message.alert_events", events as i64),
        ],
    );
    let sc = span.span_context().clone();
    span.end();
    t.cx.with_remote_span_context(sc)
}

/// A span for one step that happens now, under `parent`; returns the `traceparent` of the new
/// span (what the next hop's message carries).
pub fn step(
    parent: &Context,
    name: &'static str,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Option<String> {
    let mut span = start(name, kind, parent, wall_now(), attributes);
    let sc = span.span_context().clone();
    span.end();
    traceparent(&parent.with_remote_span_context(sc))
}

/// A step under the context a message's headers carry, if they carry a sampled one.
pub fn step_from_headers(
    headers: Option<&HeaderMap>,
    name: &'static str,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Option<String> {
    if !enabled() {
        return None;
    }
    step(&remote(headers)?, name, kind, attributes)
}

/// A span open while something is done (a delivery); ended with its outcome.
pub struct Open(global::BoxedSpan);

impl Open {
    pub fn end(mut self, attributes: Vec<KeyValue>, failed: Option<&str>) {
        self.0.set_attributes(attributes);
        if let Some(e) = failed {
            self.0
                .set_status(opentelemetry::trace::Status::error(e.to_string()));
        }
        self.0.end();
    }
}

/// Opens a span under the context a message's headers carry.
pub fn open_from_headers(
    headers: Option<&HeaderMap>,
    name: &'static str,
    attributes: Vec<KeyValue>,
) -> Option<Open> {
    if !enabled() {
        return None;
    }
    let parent = remote(headers)?;
    Some(Open(start(
        name,
        SpanKind::Consumer,
        &parent,
        wall_now(),
        attributes,
    )))
}

/// Exports what is buffered (at shutdown, and in tests).
pub fn flush() {
    #[cfg(feature = "otlp")]
    otlp::flush();
}

/// Starts exporting to `endpoint` (OTLP/HTTP, protobuf) with `ratio` of unsampled messages
/// traced; `""` leaves tracing off.
pub fn init(endpoint: &str, ratio: f64) -> anyhow::Result<()> {
    if endpoint.is_empty() {
        return Ok(());
    }
    #[cfg(feature = "otlp")]
    {
        otlp::init(endpoint)?;
        RATIO_BELOW.store(
            (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            Ordering::Relaxed,
        );
        ENABLED.store(true, Ordering::Relaxed);
        Ok(())
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = ratio;
        anyhow::bail!(
            "telemetry.otlp_endpoint: this binary is built without the `otlp` feature (cargo build --features otlp)"
        )
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::Mutex;

    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

    static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

    pub fn init(endpoint: &str) -> anyhow::Result<()> {
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Built on the exporter's own thread: the blocking client keeps a runtime of its own,
        // which may not be made inside the async runtime.
        let client = std::thread::spawn(reqwest::blocking::Client::new)
            .join()
            .map_err(|_| {
                anyhow::anyhow!("telemetry.otlp_endpoint: the HTTP client could not be made")
            })?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(url)
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
        // The sampling is decided before spans are made (see the module doc).
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOn)
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("prismwatch")
                    .build(),
            )
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        *PROVIDER.lock().expect("provider lock") = Some(provider);
        Ok(())
    }

    pub fn flush() {
        if let Some(p) = PROVIDER.lock().expect("provider lock").as_ref() {
            let _ = p.force_flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publishers_sampled_context_is_taken_and_an_unsampled_or_broken_one_is_not() {
        let id = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_of(id).unwrap();
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(traceparent(&cx).as_deref(), Some(id));
        assert!(context_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_none());
        assert!(context_of("garbage").is_none());
    }
}
