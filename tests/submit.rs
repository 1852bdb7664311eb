//! `clip-worker submit` against a real nats-server and worker: request/reply and durable jobs,
//! JSONL and `.npy` output, and images over `max_payload` through the Object Store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clip_worker::cli::jsonl::InputDoc;
use clip_worker::client::{upload, Client, Options};
use clip_worker::preprocess::input::{Document, Modality};
use clip_worker::transport::connect::NatsArgs;
use common::client::png;
use common::{NatsServer, Worker};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const DIM: usize = 32;

fn submit(url: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .arg("submit")
        .args(args)
        .args(["--nats-url", url, "--timeout", "30s"])
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
        let client = Client::connect(&NatsArgs::for_url(&nats.url), "clip")
            .await
            .unwrap();
        assert_eq!(client.max_payload(), 64 * 1024);
        let docs = vec![InputDoc {
            id: "big".into(),
            doc: Ok(Document::blob(big.clone())),
            matches: Vec::new(),
        }];
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
