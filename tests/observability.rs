//! Metrics, probes and traces of a real worker: real `nats-server`, real HTTP scrapes of
//! `/metrics`, `/healthz` and `/readyz`, and an in-test OTLP/HTTP receiver for the spans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_nats::HeaderMap;
use clip_worker::protocol::{self, Request, WireDoc};
use common::client::*;
use common::probe::{get, metrics_addr, wait_for};
use common::{NatsServer, Worker};
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// HTTP scrapes

/// Sum of the samples of `name` whose labels include every pair in `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let has = |(k, v): &(&str, &str)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(has) {
            total += value.parse::<f64>().unwrap();
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent_and_show_the_batches() {
    let nats = NatsServer::start();
    // Minibatches of 4 that wait up to 1 s to fill: 8 concurrent one-document requests form
    // batches larger than one.
    let w = Worker::start(
        &nats.url,
        &[
            "--minibatch-size",
            "4",
            "--max-batch-delay",
            "1s",
            "--max-docs-per-request",
            "4",
        ],
    );
    let addr = metrics_addr(&w);
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(get(&addr, "/readyz").0, 200);
    let client = connect(&nats.url).await;
    let before = get(&addr, "/metrics").1;

    // 8 concurrent single-text requests.
    let calls = (0..8).map(|i| {
        let client = client.clone();
        async move {
            call(
                &client,
                "clip.encode",
                &request(vec![text(&format!("t{i}"))]),
            )
            .await
        }
    });
    for (resp, _) in futures::future::join_all(calls).await {
        assert!(resp.error.is_none());
    }
    // One request with two bad documents and one good image.
    let (resp, _) = call(
        &client,
        "clip.encode",
        &request(vec![
            image(b"not an image".to_vec()),
            WireDoc::default(),
            image(png(3, 32, 32)),
        ]),
    )
    .await;
    assert!(resp.error.is_none());
    // A rank request: a text root with two text matches.
    let mut root = text("root");
    root.matches = vec![text("a"), text("b")];
    let (resp, _) = call(&client, "clip.rank", &request(vec![root])).await;
    assert!(resp.error.is_none());
    // Refused whole: not MessagePack, and more documents than allowed.
    let (resp, _) = call_raw(&client, "clip.encode", b"\xc1 not msgpack".to_vec()).await;
    assert!(resp.error.is_some());
    let five = (0..5).map(|i| text(&format!("x{i}"))).collect();
    let (resp, _) = call(&client, "clip.encode", &request(five)).await;
    assert!(resp.error.is_some());
    // One durable job.
    let mut results = client.subscribe("results.metrics").await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Clip-Reply-To", "results.metrics");
    let js = async_nats::jetstream::new(client.clone());
    let job = protocol::encode(&request(vec![text("job")])).unwrap();
    js.publish_with_headers("clip.jobs.encode", headers, job.into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), results.next())
        .await
        .expect("job result")
        .unwrap();

    let m = wait_for(&addr, "/metrics", Duration::from_secs(10), |_, body| {
        sample(body, "clip_worker_jetstream_acks_total", &[("kind", "ack")]) == 1.0
    });
    let count = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels);
    let service = ("transport", "service");
    assert_eq!(
        count(
            "clip_worker_requests_total",
            &[("endpoint", "encode"), service, ("outcome", "ok")]
        ),
        9.0
    );
    assert_eq!(
        count(
            "clip_worker_requests_total",
            &[("endpoint", "rank"), service, ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "clip_worker_requests_total",
            &[("outcome", "bad_request"), service]
        ),
        1.0
    );
    assert_eq!(
        count("clip_worker_requests_total", &[("outcome", "too_large")]),
        1.0
    );
    assert_eq!(
        count(
            "clip_worker_requests_total",
            &[
                ("endpoint", "encode"),
                ("transport", "jobs"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert_eq!(
        count("clip_worker_request_duration_seconds_count", &[service]),
        12.0
    );
    // Documents: 8 + 1 (job) + 3 (rank) texts, 1 image, 2 refused.
    let ok_text = count(
        "clip_worker_documents_total",
        &[("modality", "text"), ("outcome", "ok")],
    );
    assert_eq!(ok_text, 12.0);
    assert_eq!(
        count(
            "clip_worker_documents_total",
            &[("modality", "image"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "clip_worker_documents_total",
            &[("outcome", "image_decode")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "clip_worker_documents_total",
            &[("outcome", "empty_document")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "clip_worker_rejections_total",
            &[("reason", "bad_document")]
        ),
        2.0
    );
    assert_eq!(
        count("clip_worker_rejections_total", &[("reason", "bad_request")]),
        1.0
    );
    assert_eq!(
        count("clip_worker_rejections_total", &[("reason", "too_large")]),
        1.0
    );
    // JetStream: one delivery, acked once, never redelivered.
    assert_eq!(count("clip_worker_jetstream_deliveries_total", &[]), 1.0);
    assert_eq!(count("clip_worker_jetstream_redeliveries_total", &[]), 0.0);

    // Batches larger than one formed under concurrent single-document load.
    let text_batches = count("clip_worker_batch_size_count", &[("modality", "text")]);
    let singles = count(
        "clip_worker_batch_size_bucket",
        &[("modality", "text"), ("le", "1")],
    );
    assert!(
        text_batches > singles,
        "every text batch had one document: {text_batches} batches"
    );
    // Every text document embedded went through a batch (the warm-up's included).
    let inferences = count("clip_worker_inferences_total", &[("modality", "text")]);
    let before_inferences = sample(
        &before,
        "clip_worker_inferences_total",
        &[("modality", "text")],
    );
    assert_eq!(inferences - before_inferences, ok_text);
    assert_eq!(
        count("clip_worker_batch_size_sum", &[("modality", "text")]),
        inferences
    );
    // Each stage has observations.
    for (name, labels) in [
        (
            "clip_worker_preprocess_duration_seconds_count",
            ("modality", "text"),
        ),
        (
            "clip_worker_preprocess_duration_seconds_count",
            ("modality", "image"),
        ),
        (
            "clip_worker_queue_wait_duration_seconds_count",
            ("modality", "text"),
        ),
        (
            "clip_worker_inference_duration_seconds_count",
            ("modality", "image"),
        ),
        (
            "clip_worker_publish_duration_seconds_count",
            ("transport", "jobs"),
        ),
        (
            "clip_worker_publish_duration_seconds_count",
            ("transport", "service"),
        ),
    ] {
        assert!(count(name, &[labels]) > 0.0, "{name} {labels:?} is empty");
    }
    // Described model and build, connection and readiness.
    assert_eq!(
        count(
            "clip_worker_model_info",
            &[
                ("model", "ViT-B-32::openai"),
                ("device", "cpu"),
                ("dtype", "fp32"),
                ("image_size", "224")
            ]
        ),
        1.0
    );
    assert_eq!(
        count(
            "clip_worker_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(count("clip_worker_nats_connected", &[]), 1.0);
    assert_eq!(count("clip_worker_ready", &[]), 1.0);
    assert_eq!(count("clip_worker_inflight_documents", &[]), 0.0);

    // `$SRV.STATS` reports the same batches.
    let stats = service_stats(&client, "clip-worker", Duration::from_millis(500)).await;
    let batches = &stats[0]["endpoints"][0]["data"]["batches"]["text"];
    assert_eq!(batches["batches"].as_f64(), Some(text_batches));
    assert_eq!(batches["docs"].as_f64(), Some(inferences));
}

// ---------------------------------------------------------------------------------------------
// Probes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_nats_and_ends_when_draining_begins() {
    let mut nats = NatsServer::start();
    nats.stop();
    // A worker whose NATS server is not up yet: alive, not ready.
    let mut w = Worker::spawn(&nats.url, &SLOW_WORKER, &[]);
    let addr = metrics_addr(&w);
    wait_for(&addr, "/healthz", Duration::from_secs(60), |s, _| s == 200);
    let body = wait_for(&addr, "/readyz", Duration::from_secs(30), |_, b| {
        b.contains("\"model_warm\":true")
    });
    assert!(body.contains("\"ready\":false"), "{body}");
    assert!(body.contains("\"nats_connected\":false"), "{body}");
    assert_eq!(get(&addr, "/readyz").0, 503);

    nats.restart(Duration::ZERO);
    w.wait_for_log("clip-worker ready", Duration::from_secs(60));
    wait_for(&addr, "/readyz", Duration::from_secs(30), |s, _| s == 200);

    // A job that takes a few seconds.
    let client = connect(&nats.url).await;
    let js = async_nats::jetstream::new(client.clone());
    let job = protocol::encode(&request(slow_job_docs())).unwrap();
    js.publish("clip.jobs.encode", job.into())
        .await
        .unwrap()
        .await
        .unwrap();
    w.wait_for_log("job received", Duration::from_secs(30));
    w.signal("TERM");
    // Not ready while the job is still finishing; alive throughout.
    let body = wait_for(&addr, "/readyz", Duration::from_secs(10), |s, _| s == 503);
    assert!(body.contains("\"not_draining\":false"), "{body}");
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(w.wait_exit(Duration::from_secs(60)), Some(0));
    let log = w.log.lock().unwrap().join("\n");
    assert!(
        !log.contains("deadline reached"),
        "the job finished during the drain:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// Traces

/// An OTLP/HTTP receiver: every exported span, decoded with the OpenTelemetry protobuf types.
struct OtlpReceiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl OtlpReceiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || serve_exports(stream, &sink));
            }
        });
        OtlpReceiver { endpoint, spans }
    }

    /// Waits until `done` holds for the spans received so far.
    fn wait(&self, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let spans = self.spans.lock().unwrap().clone();
            if done(&spans) {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let names: Vec<String> = self
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        panic!("spans never arrived; got {names:?}");
    }
}

/// Answers OTLP export requests on one (keep-alive) connection.
fn serve_exports(stream: TcpStream, sink: &Mutex<Vec<Span>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap(),
                    "content-type" => content_type = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(
            request_line.starts_with("POST /v1/traces "),
            "{request_line}"
        );
        assert_eq!(content_type, "application/x-protobuf");
        let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for resource in export.resource_spans {
            for scope in resource.scope_spans {
                sink.lock().unwrap().extend(scope.spans);
            }
        }
        writer
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(any_value::Value::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traced(trace_id: &str, parent: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", format!("00-{trace_id}-{parent}-01").as_str());
    h
}

async fn call_traced(client: &async_nats::Client, headers: HeaderMap, req: &Request) -> HeaderMap {
    let payload = protocol::encode(req).unwrap();
    let msg = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers("clip.encode", headers, payload.into()),
    )
    .await
    .expect("reply in time")
    .unwrap();
    let resp = protocol::decode_response(&msg.payload).unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    msg.headers.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_continue_the_callers_trace_and_batches_link_to_messages() {
    let otlp = OtlpReceiver::start();
    let nats = NatsServer::start();
    // Minibatches of 2 that wait up to 1 s to fill: two concurrent one-text requests share one.
    let w = Worker::start_with_env(
        &nats.url,
        &[
            "--minibatch-size",
            "2",
            "--max-batch-delay",
            "1s",
            "--log-format",
            "json",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let client = connect(&nats.url).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (parent_a, parent_b) = ("00f067aa0ba902b7", "00f067aa0ba902b8");
    let (request_a, request_b) = (request(vec![text("a")]), request(vec![text("b")]));
    let (headers_a, headers_b) = tokio::join!(
        call_traced(&client, traced(trace_id, parent_a), &request_a),
        call_traced(&client, traced(trace_id, parent_b), &request_b),
    );

    // One job, too: the trace crosses JetStream.
    let job_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mut results = client.subscribe("results.traced").await.unwrap();
    let mut headers = traced(job_trace, "10f067aa0ba902b7");
    headers.insert("Clip-Reply-To", "results.traced");
    headers.insert("Nats-Msg-Id", "traced-job");
    let js = async_nats::jetstream::new(client.clone());
    let job = protocol::encode(&request(vec![text("job")])).unwrap();
    js.publish_with_headers("clip.jobs.encode", headers, job.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), results.next())
        .await
        .expect("job result")
        .unwrap();

    let spans = otlp.wait(Duration::from_secs(30), |spans| {
        let named = |n: &str| spans.iter().filter(|s| s.name == n).count();
        named("process clip.encode") == 2
            && named("process clip.jobs.encode") == 1
            && named("publish") == 3
            && named("preprocess") >= 3
            && spans
                .iter()
                .any(|s| s.name == "inference text" && s.links.len() == 2)
    });
    let by_name = |n: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == n).collect() };

    // The consumer spans continue the callers' traces, as children of their spans.
    let process = by_name("process clip.encode");
    let mut parents: Vec<String> = process.iter().map(|s| hex(&s.parent_span_id)).collect();
    parents.sort();
    assert_eq!(parents, [parent_a, parent_b]);
    for p in &process {
        assert_eq!(hex(&p.trace_id), trace_id);
        assert_eq!(p.kind, 5, "SPAN_KIND_CONSUMER");
        assert_eq!(attr_str(p, "messaging.system"), Some("nats"));
        assert_eq!(attr_str(p, "messaging.operation.type"), Some("process"));
        assert_eq!(
            attr_str(p, "messaging.destination.name"),
            Some("clip.encode")
        );
        assert_eq!(
            attr_str(p, "messaging.consumer.group.name"),
            Some("clip-workers")
        );
        assert!(attr_int(p, "messaging.message.body.size").unwrap() > 0);
    }
    let process_ids: Vec<Vec<u8>> = process.iter().map(|s| s.span_id.clone()).collect();

    // Preprocessing and publishing are children of the message's span.
    for name in ["preprocess", "publish"] {
        for child in by_name(name)
            .iter()
            .filter(|s| s.trace_id == process[0].trace_id)
        {
            assert!(
                process_ids.contains(&child.parent_span_id),
                "{name} is not a child of a message span"
            );
        }
    }
    // The replies carry the trace onwards: the context of each reply's publish span.
    let publish_ids: Vec<String> = by_name("publish").iter().map(|s| hex(&s.span_id)).collect();
    for h in [&headers_a, &headers_b] {
        let tp = h
            .get("traceparent")
            .expect("reply has a traceparent")
            .as_str();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[1], trace_id);
        assert!(publish_ids.contains(&parts[2].to_string()), "{tp}");
    }

    // The shared minibatch: one span linked to both messages' spans, with its attributes.
    let batch = by_name("inference text")
        .into_iter()
        .find(|s| s.links.len() == 2)
        .unwrap();
    let mut linked: Vec<Vec<u8>> = batch.links.iter().map(|l| l.span_id.clone()).collect();
    linked.sort();
    let mut expected = process_ids.clone();
    expected.sort();
    assert_eq!(linked, expected);
    assert!(batch.links.iter().all(|l| hex(&l.trace_id) == trace_id));
    assert_eq!(attr_int(batch, "clip_worker.batch.size"), Some(2));
    assert_eq!(attr_str(batch, "clip_worker.modality"), Some("text"));
    assert_eq!(
        attr_str(batch, "clip_worker.model"),
        Some("ViT-B-32::openai")
    );
    assert_eq!(attr_str(batch, "clip_worker.device"), Some("cpu"));
    assert!(process_ids.contains(&batch.parent_span_id));

    // The job: its span continues the publisher's trace and says which delivery it was.
    let job_span = by_name("process clip.jobs.encode")[0];
    assert_eq!(hex(&job_span.trace_id), job_trace);
    assert_eq!(hex(&job_span.parent_span_id), "10f067aa0ba902b7");
    assert_eq!(
        attr_str(job_span, "messaging.message.id"),
        Some("traced-job")
    );
    assert_eq!(
        attr_int(job_span, "messaging.nats.message.delivery_count"),
        Some(1)
    );
    assert_eq!(
        attr_str(job_span, "messaging.consumer.group.name"),
        Some("clip-workers")
    );
    let tp = result
        .headers
        .as_ref()
        .unwrap()
        .get("traceparent")
        .unwrap()
        .as_str();
    assert!(tp.contains(job_trace), "{tp}");

    // Logs are JSON lines and carry the trace id of the message they are about.
    let log = w.log.lock().unwrap().clone();
    let received = log
        .iter()
        .find(|l| l.contains("job received"))
        .expect("job log line");
    let line: serde_json::Value = serde_json::from_str(received).expect("a JSON log line");
    assert_eq!(line["span"]["trace_id"].as_str(), Some(job_trace));
    assert!(log
        .iter()
        .filter(|l| l.starts_with('{'))
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn without_otel_variables_nothing_is_exported_but_the_trace_context_passes_through() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let otlp = OtlpReceiver::start();
    let nats = NatsServer::start();
    // The endpoint is named but the SDK is disabled: no export at all.
    let _w = Worker::start_with_env(
        &nats.url,
        &["--mode", "service"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let trace_id = "6bf92f3577b34da6a3ce929d0e0e4738";
    let parent = "20f067aa0ba902b7";
    let headers = rt.block_on(async {
        let client = connect(&nats.url).await;
        call_traced(&client, traced(trace_id, parent), &request(vec![text("a")])).await
    });
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str().to_string()),
        Some(format!("00-{trace_id}-{parent}-01"))
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(otlp.spans.lock().unwrap().is_empty());
}
