//! One metric point traced to its notification: a publisher's `traceparent` continues through
//! ingest, evaluation, the alert's publish, the alert manager and the webhook delivery, exported
//! over OTLP/HTTP to a real receiver on loopback (an HTTP server decoding the protobuf export
//! requests with the `opentelemetry-proto` types). Needs the `otlp` feature.
#![cfg(feature = "otlp")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prismwatch::app::Component;
use prismwatch::model::MetricPoint;
use prost::Message;

/// (trace id, span id, parent span id, name), hex.
type Spans = Arc<Mutex<Vec<(String, String, String, String)>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP trace receiver on loopback: its URL and what it received.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Default::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let req =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
                let mut k = kept.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            k.push((
                                hex(&s.trace_id),
                                hex(&s.span_id),
                                hex(&s.parent_span_id),
                                s.name,
                            ));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_is_traced_to_its_notification_through_every_component() {
    let (_srv, mut cfg, js) = common::fresh().await;
    let (otlp, spans) = receiver().await;
    cfg.telemetry.otlp_endpoint = otlp;
    // Only the publisher's sampled message is traced.
    cfg.telemetry.trace_sample_ratio = 0.0;
    let fakes = common::channels::Fakes::start(20, 60.0);
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, fakes.url("/webhook/w")).unwrap();
    let routing = dir.path().join("routing.yaml");
    std::fs::write(
        &routing,
        format!(
            "route: {{receiver: wh, group_by: [alertname], group_wait: 0s}}\nreceivers:\n  - name: wh\n    webhook_configs: [{{url: {{file: {}}}}}]\n",
            url_file.display()
        ),
    )
    .unwrap();
    cfg.alerting.routing_file = routing;
    let app = common::RunningApp::start_with(
        cfg,
        common::rules(
            "rules:\n  - name: disk_full\n    metric: disk_usage_percent\n    condition: value > 90\n    priority: P1\n",
        ),
        vec![Component::Processor, Component::Manager, Component::Notify],
    );
    common::wait_for("the processor to join", Duration::from_secs(20), || async {
        !common::lease_owners(&js, common::GROUP).await.is_empty()
    })
    .await;

    // Untraced points first, then the full disk, its message carrying the publisher's trace.
    let now = prismwatch::tools::clock::now_ms();
    let point = |ts: i64, value: f64| MetricPoint {
        name: "disk_usage_percent".into(),
        labels: [("service".to_string(), "storage".to_string())].into(),
        value,
        timestamp: ts,
    };
    common::publish(&js, &[point(now - 20_000, 50.0)], 1).await;
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/msgpack");
    headers.insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PUBLISHER_SPAN}-01").as_str(),
    );
    js.publish_with_headers(
        "prism.metrics.service.storage.disk_usage_percent",
        headers,
        rmp_serde::to_vec_named(&point(now - 10_000, 95.0))
            .unwrap()
            .into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    common::channels::eventually("the webhook delivery", 30, || async {
        !fakes.requests_to("/webhook/w").await.is_empty()
    })
    .await;
    // Stopping flushes what is buffered to the receiver.
    app.stop().await.unwrap();
    let spans = spans.lock().unwrap().clone();
    let ours: Vec<_> = spans.iter().filter(|s| s.0 == TRACE_ID).collect();
    let by_name = |n: &str| {
        let found: Vec<_> = ours.iter().filter(|s| s.3 == n).collect();
        assert_eq!(found.len(), 1, "{n}: {ours:#?}");
        (*found[0]).clone()
    };
    // One chain, each step the child of the one before.
    let mut parent = PUBLISHER_SPAN.to_string();
    for name in [
        "prismwatch.ingest",
        "prismwatch.evaluate",
        "prismwatch.alert.publish",
        "prismwatch.manager.receive",
        "prismwatch.manager.notify",
        "prismwatch.notify.deliver",
    ] {
        let s = by_name(name);
        assert_eq!(s.2, parent, "{name}'s parent: {ours:#?}");
        parent = s.1.clone();
    }
    // The untraced point made no span at all.
    assert_eq!(spans.len(), ours.len(), "{spans:#?}");
}
