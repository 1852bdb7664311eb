//! `clip-worker submit` against a real nats-server and worker: request/reply and durable jobs,
//! JSONL and `.npy` output, images over `max_payload` through the Object Store, and how
//! failures are retried and reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clip_worker::client::{upload, Client, Options, RetryPolicy};
use clip_worker::docio::InputDoc;
use clip_worker::error::{DocError, ErrorCode};
use clip_worker::preprocess::input::{Document, Modality};
use clip_worker::protocol::{self, IncomingRequest, Response, ResultDoc};
use clip_worker::transport::connect::NatsOptions;
use common::client::png;
use common::{NatsServer, Worker};
use futures::StreamExt;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DIM: usize = 32;

fn submit(url: &str, args: &[&str]) -> Output {
    submit_with_timeout(url, args, "30s")
}

fn submit_with_timeout(url: &str, args: &[&str], timeout: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .arg("submit")
        .args(args)
        .args(["--nats-url", url, "--timeout", timeout])
        .env("CLIP_WORKER_LOG", "clip_worker=warn")
        .output()
        .expect("run clip-worker submit");
    eprintln!(
        "submit {args:?} stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn embedding(v: &Value) -> Vec<f32> {
    v["embedding"]
        .as_array()
        .unwrap_or_else(|| panic!("no embedding in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A PNG of noise (does not compress): `side * side * 3` bytes and a little more.
fn noise_png(side: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        let mut px = [0u8; 3];
        for c in &mut px {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *c = (state >> 24) as u8;
        }
        image::Rgb(px)
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn encode_and_rank_by_request_reply_and_durable_jobs() {
    let nats = NatsServer::start();
    let worker = Worker::start(&nats.url, &[]);
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.png");
    write(&single, &png(1, 64, 48));
    let folder = dir.path().join("photos");
    write(&folder.join("b/two.png"), &png(2, 40, 40));
    write(&folder.join("a.png"), &png(3, 50, 30));
    write(&folder.join("notes.txt"), b"not an image");
    let (single, folder) = (single.to_str().unwrap(), folder.to_str().unwrap());
    let inputs = ["a photo of a cat", single, folder, "a diagram"];

    // Request/reply, JSON lines on stdout.
    let out = submit(&nats.url, &[&["encode"][..], &inputs].concat());
    assert!(out.status.success());
    let rr = lines(&String::from_utf8_lossy(&out.stdout));
    let ids: Vec<&str> = rr.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let a_png = format!("{folder}/a.png");
    let two_png = format!("{folder}/b/two.png");
    assert_eq!(ids, ["0", "1", a_png.as_str(), two_png.as_str(), "4"]);
    let modalities: Vec<&str> = rr.iter().map(|l| l["modality"].as_str().unwrap()).collect();
    assert_eq!(modalities, ["text", "image", "image", "image", "text"]);
    assert!(rr.iter().all(|l| embedding(l).len() == DIM));

    // The same as durable jobs (two per request, two in flight), written to a file.
    let jsonl = dir.path().join("durable.jsonl");
    let args = [
        &["encode"][..],
        &inputs,
        &["--durable", "--batch-size", "2", "--concurrency", "2"],
    ];
    let out = submit(
        &nats.url,
        &[&args.concat()[..], &["--output", jsonl.to_str().unwrap()]].concat(),
    );
    assert!(out.status.success());
    let durable = lines(&std::fs::read_to_string(&jsonl).unwrap());
    assert_eq!(durable.len(), rr.len());
    for (a, b) in rr.iter().zip(&durable) {
        assert_eq!(a["id"], b["id"]);
        assert!(
            max_diff(&embedding(a), &embedding(b)) < 1e-6,
            "{} differs",
            a["id"]
        );
    }

    // .npy: a float32 [N, D] matrix; a document that fails makes the command fail after writing
    // (its row is NaN).
    let npy = dir.path().join("out.npy");
    let missing = dir.path().join("missing.png");
    let out = submit(
        &nats.url,
        &[
            "encode",
            "a photo of a cat",
            single,
            missing.to_str().unwrap(),
            "--output",
            npy.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (3, 32)"),
        "{header}"
    );
    assert_eq!((10 + header_len) % 64, 0);
    assert_eq!(bytes.len(), 10 + header_len + 3 * DIM * 4);
    let data: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(max_diff(&data[..DIM], &embedding(&rr[0])) < 1e-6);
    assert!(max_diff(&data[DIM..2 * DIM], &embedding(&rr[1])) < 1e-6);
    assert!(data[2 * DIM..].iter().all(|v| v.is_nan()));

    // Rank by request/reply and as a durable job: same order, same scores.
    let rank = |extra: &[&str]| {
        let args = [
            &[
                "rank",
                "--query",
                "a photo of a cat",
                "a dog",
                single,
                "a cat",
            ][..],
            extra,
        ]
        .concat();
        let out = submit(&nats.url, &args);
        assert!(out.status.success());
        let l = lines(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["id"], "query");
        let matches = l[0]["matches"].as_array().unwrap().clone();
        assert_eq!(matches.len(), 3);
        matches
    };
    let (a, b) = (rank(&[]), rank(&["--durable"]));
    let mut ids: Vec<&str> = a.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        b.iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
    ids.sort();
    assert_eq!(ids, ["0", "1", "2"]);
    let score = |m: &Value| m["scores"]["clip_score"].as_f64().unwrap();
    assert!(a.windows(2).all(|w| score(&w[0]) >= score(&w[1])));
    for (x, y) in a.iter().zip(&b) {
        assert!((score(x) - score(y)).abs() < 1e-9);
    }
    // Results to a plain inbox are delivered once: no job had to run twice.
    let log = worker.log.lock().unwrap().join("\n");
    assert!(!log.contains("job will be redelivered"), "{log}");
    assert!(
        log.contains("job received") && !log.contains("delivered=2"),
        "{log}"
    );
}

#[test]
fn images_over_max_payload_go_through_the_object_store() {
    let nats = NatsServer::start_with(Some(64 * 1024));
    let _worker = Worker::start(&nats.url, &[]);
    let dir = tempfile::tempdir().unwrap();
    let big = noise_png(200);
    assert!(big.len() > 100 * 1024, "{} bytes", big.len());
    let path = dir.path().join("big.png");
    write(&path, &big);
    let path = path.to_str().unwrap();

    let rr = submit(&nats.url, &["encode", path, "a small text"]);
    assert!(rr.status.success());
    let rr = lines(&String::from_utf8_lossy(&rr.stdout));
    assert_eq!(rr.len(), 2);
    assert_eq!(rr[0]["modality"], "image");
    assert_eq!(embedding(&rr[0]).len(), DIM);

    let durable = submit(&nats.url, &["encode", path, "a small text", "--durable"]);
    assert!(durable.status.success());
    let durable = lines(&String::from_utf8_lossy(&durable.stdout));
    assert!(max_diff(&embedding(&rr[0]), &embedding(&durable[0])) < 1e-6);

    // The library: the upload is named by content and lands in the default bucket.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::connect(&NatsOptions::for_url(&nats.url), "clip")
            .await
            .unwrap();
        assert_eq!(client.max_payload(), 64 * 1024);
        let docs = vec![InputDoc::new("big", Document::blob(big.clone()))];
        let results = client.encode(docs, &Options::default()).await;
        let e = results[0].as_ref().expect("embedding");
        assert_eq!(e.modality, Modality::Image);
        assert!(max_diff(&e.embedding, &embedding(&rr[0])) < 1e-6);

        let js = async_nats::jetstream::new(client.nats().clone());
        let store = js.get_object_store("clip-uploads").await.expect("bucket");
        let info = store.info(upload::object_name(&big)).await.expect("object");
        assert_eq!(info.size, big.len());
    });
}

/// Answers every request on `subject` through `answer` (given the request and how many came
/// before it), or never when `answer` returns `None`; returns the count of requests received.
async fn scripted_worker(
    url: &str,
    subject: &str,
    answer: impl Fn(&IncomingRequest, usize) -> Option<Response> + Send + 'static,
) -> Arc<AtomicUsize> {
    let nats = async_nats::connect(url).await.unwrap();
    let mut sub = nats.subscribe(subject.to_string()).await.unwrap();
    nats.flush().await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let request = protocol::decode_request(&msg.payload).unwrap();
            if let (Some(reply), Some(response)) = (msg.reply, answer(&request, n)) {
                let payload = protocol::encode(&response).unwrap();
                nats.publish(reply, payload.into()).await.unwrap();
            }
        }
    });
    seen
}

fn overloaded(message: &str) -> DocError {
    DocError::new(ErrorCode::Overloaded, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_tried_at_most_max_attempts_times_in_all() {
    let nats = NatsServer::start();
    let client = Client::connect(&NatsOptions::for_url(&nats.url), "clip")
        .await
        .unwrap();
    let opts = Options {
        retry: RetryPolicy {
            max_attempts: 4,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        },
        ..Options::default()
    };
    let docs = || {
        vec![
            InputDoc::new("a", Document::text("one")),
            InputDoc::new("b", Document::text("two")),
        ]
    };

    // Nobody listens: the real cause, after every try.
    for r in client.encode(docs(), &opts).await {
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
        assert!(
            e.message
                .contains("no worker is listening on `clip.encode`")
                && e.message.ends_with("(after 4 tries)"),
            "{e}"
        );
    }

    // A worker that is always full, turning the whole request away and then each document in
    // turn: one budget of tries covers both, it does not multiply.
    let seen = scripted_worker(&nats.url, "clip.encode", |req, n| {
        Some(if n % 2 == 0 {
            Response::failure(req.id.clone(), "m", overloaded("worker full"))
        } else {
            let docs = req
                .docs
                .iter()
                .map(|d| ResultDoc {
                    id: d.id.clone().unwrap_or_default(),
                    modality: None,
                    embedding: None,
                    scores: None,
                    matches: None,
                    error: Some(overloaded("no slot for this document").into()),
                })
                .collect();
            Response {
                id: req.id.clone(),
                model: "m".into(),
                docs,
                error: None,
            }
        })
    })
    .await;
    for r in client.encode(docs(), &opts).await {
        let e = r.unwrap_err();
        assert_eq!(e.code, ErrorCode::Overloaded, "{e}");
        assert!(e.message.ends_with("(after 4 tries)"), "{e}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_answers_is_a_timeout_tried_once() {
    let nats = NatsServer::start();
    let seen = scripted_worker(&nats.url, "clip.encode", |_, _| None).await;
    let url = nats.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        submit_with_timeout(&url, &["encode", "a photo of a cat"], "1s")
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let got = lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(got[0]["error"]["code"], "timeout", "{got:?}");
    let message = got[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no reply on `clip.encode` within 1s"),
        "{message}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // As a durable job: the job stays in the stream, published once.
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "CLIP_JOBS".into(),
            subjects: vec!["clip.jobs.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let url = nats.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        submit_with_timeout(&url, &["encode", "a photo of a cat", "--durable"], "1s")
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let got = lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(got[0]["error"]["code"], "timeout", "{got:?}");
    let message = got[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("stays queued in the stream"), "{message}");
    let mut stream = stream;
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

// ---------------------------------------------------------------------------------------------
// `clip-worker bench`

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .arg("bench")
        .args(args)
        .args(["--json", "--quiet"])
        .env("CLIP_WORKER_LOG", "clip_worker=warn")
        .output()
        .expect("run clip-worker bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed:\n{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench {args:?}: not JSON ({e}):\n{stderr}"))
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The counts of a report add up: requests and documents split into ok and failed, failures
/// by code, latencies one per request, the timeline over every answer.
fn check_counts(r: &Value, batch: u64) {
    for what in ["requests", "documents"] {
        let c = &r[what];
        assert_eq!(
            count(&c["total"]),
            count(&c["ok"]) + count(&c["failed"]),
            "{what}: {r}"
        );
        let by_error: u64 = c["by_error"].as_object().unwrap().values().map(count).sum();
        assert_eq!(by_error, count(&c["failed"]), "{what}: {r}");
    }
    assert_eq!(
        count(&r["documents"]["total"]),
        batch * count(&r["requests"]["total"])
    );
    assert_eq!(
        count(&r["latency_ok"]["count"]),
        count(&r["requests"]["ok"])
    );
    let timeline = r["timeline"].as_array().unwrap();
    let sum = |k: &str| timeline.iter().map(|s| count(&s[k])).sum::<u64>();
    assert_eq!(sum("docs_ok"), count(&r["documents"]["ok"]));
    assert_eq!(sum("requests"), count(&r["requests"]["total"]));
    for l in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(r["latency_ok"][l].as_f64().unwrap() > 0.0, "{l}: {r}");
    }
    assert!(r["latency_ok"]["p50_ms"].as_f64() <= r["latency_ok"]["max_ms"].as_f64());
    assert!(r["docs_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_drives_a_worker_and_its_report_adds_up() {
    let nats = NatsServer::start();
    let worker = Worker::start(&nats.url, &[]);
    worker.wait_for_log("metrics on http://", Duration::from_secs(30));
    let metrics = {
        let log = worker.log.lock().unwrap();
        let line = log
            .iter()
            .find(|l| l.contains("metrics on http://"))
            .unwrap();
        format!("http://{}", line.split("http://").nth(1).unwrap().trim())
    };
    let common = [
        "--nats-url",
        &nats.url,
        "--workload",
        "mixed",
        "--image-sizes",
        "64x48,160x120",
        "--batch-size",
        "4",
        "--metrics-url",
        &metrics,
    ];

    // Request/reply at a fixed concurrency for a duration.
    let mut args = common.to_vec();
    args.extend(["--concurrency", "2", "--duration", "2s"]);
    let r = bench(&args);
    assert_eq!(
        (r["mode"].as_str(), r["transport"].as_str()),
        (Some("nats"), Some("request"))
    );
    check_counts(&r, 4);
    assert_eq!(count(&r["requests"]["failed"]), 0, "{r}");
    // The worker embedded exactly the documents the bench saw answered, in minibatches.
    let stages = r["worker"]["stages"].as_object().unwrap();
    let worker_docs: u64 = stages.values().map(|s| count(&s["docs"])).sum();
    assert_eq!(worker_docs, count(&r["documents"]["ok"]), "{r}");
    for modality in ["text", "image"] {
        let s = &stages[modality];
        let batches: u64 = s["batch_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| count(&b["batches"]))
            .sum();
        assert_eq!(batches, count(&s["batches"]), "{modality}: {s}");
        assert!(s["preprocess_ms_per_doc"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["inference_ms_per_batch"].as_f64().unwrap() > 0.0, "{s}");
    }

    // Durable jobs at a fixed arrival rate for a count: every job answered, the stream watched.
    let mut args = common.to_vec();
    args.extend(["--durable", "--rate", "20", "--count", "12"]);
    let r = bench(&args);
    assert_eq!(r["transport"].as_str(), Some("jobs"));
    check_counts(&r, 4);
    assert_eq!(count(&r["requests"]["total"]), 12);
    assert_eq!(count(&r["documents"]["ok"]), 48, "{r}");
    assert!(r["stream_max_messages"].is_u64(), "{r}");
}

#[test]
fn bench_baselines_run_in_process_over_the_same_inputs() {
    let model = common::fixture_model_dir();
    for (mode, workload) in [
        ("model", "mixed"),
        ("preprocess", "image"),
        ("engine", "text"),
    ] {
        let r = bench(&[
            "--in-process",
            mode,
            "--model-dir",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--intra-threads",
            "1",
            "--workload",
            workload,
            "--image-sizes",
            "64x48",
            "--batch-size",
            "3",
            "--count",
            "4",
        ]);
        assert_eq!(r["mode"].as_str(), Some(mode));
        check_counts(&r, 3);
        assert_eq!(count(&r["documents"]["ok"]), 12, "{mode}: {r}");
        assert!(r["threads"].as_str().unwrap().contains("intra-op 1"), "{r}");
    }
}

/// The GPU throughput script's own run on CPU: every row and the preprocessing verdict, with
/// the figures read from `bench --json`.
#[test]
fn gpu_bench_script_runs_on_cpu_and_prints_its_table() {
    let out = Command::new("bash")
        .arg(common::repo_root().join("scripts/gpu_bench.sh"))
        .arg(common::fixture_model_dir())
        .env("CLIP_WORKER_BIN", env!("CARGO_BIN_EXE_clip-worker"))
        .env("DEVICE", "cpu")
        .env("BATCHES", "1 2")
        .env("SECONDS_EACH", "1")
        .env("PREPROCESS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = |prefix: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` row in:\n{stdout}"));
        line.split('|').nth(4).unwrap().trim().parse().unwrap()
    };
    for row in [
        "| model only | texts | 1 |",
        "| model only | texts | 2 |",
        "| model only | images | 1 |",
        "| model only | images | 2 |",
        "| preprocessing, one thread | images |",
        "| pipeline, 1 preprocess threads | images | 32 |",
    ] {
        assert!(rate(row) > 0.0, "{row}");
    }
    assert!(stdout.contains("preprocessing: "), "{stdout}");
}
