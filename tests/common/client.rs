//! Protocol helpers for tests: build requests, send them, decode replies.
#![allow(dead_code)]

use clip_worker::protocol::{self, Request, Response, WireDoc};
use std::time::Duration;

pub fn text(t: &str) -> WireDoc {
    WireDoc {
        text: Some(t.to_string()),
        ..Default::default()
    }
}

pub fn image(bytes: Vec<u8>) -> WireDoc {
    WireDoc {
        blob: Some(bytes),
        ..Default::default()
    }
}

pub fn with_id(mut d: WireDoc, id: &str) -> WireDoc {
    d.id = Some(id.to_string());
    d
}

/// A small deterministic PNG (a colour gradient), different for each `seed`.
pub fn png(seed: u8, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w.max(1)) as u8 ^ seed,
            (y * 255 / h.max(1)) as u8,
            seed.wrapping_mul(37).wrapping_add((x + y) as u8),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// A one-colour PNG: a few KB on the wire, but every pixel is still decoded and resized, so
/// preparing it takes real time (what the slow-job tests rely on, now that an idle tower does
/// not wait for `--max-batch-delay`).
pub fn flat_png(seed: u8, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([seed, 128, 255 - seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

pub fn request(docs: Vec<WireDoc>) -> Request {
    Request {
        id: None,
        docs,
        params: None,
    }
}

pub async fn connect(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect to test NATS")
}

/// Sends a request/reply call and decodes the response (with its headers).
pub async fn call(
    client: &async_nats::Client,
    subject: &str,
    req: &Request,
) -> (Response, async_nats::HeaderMap) {
    let payload = protocol::encode(req).expect("encode request");
    call_raw(client, subject, payload).await
}

pub async fn call_raw(
    client: &async_nats::Client,
    subject: &str,
    payload: Vec<u8>,
) -> (Response, async_nats::HeaderMap) {
    let msg = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(subject.to_string(), payload.into()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let resp = protocol::decode_response(&msg.payload).expect("decode response");
    (resp, msg.headers.unwrap_or_default())
}

pub fn embedding(resp: &Response, i: usize) -> Vec<f32> {
    resp.docs[i]
        .embedding
        .as_ref()
        .unwrap_or_else(|| panic!("doc {i} has no embedding: {:?}", resp.docs[i].error))
        .to_f32()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `$SRV.STATS.<name>` replies from every worker of the service, collected for `wait`.
pub async fn service_stats(
    client: &async_nats::Client,
    name: &str,
    wait: Duration,
) -> Vec<serde_json::Value> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(format!("$SRV.STATS.{name}"), inbox, "".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    use futures::StreamExt;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).expect("stats json"));
    }
    out
}

/// Worker settings under which [`slow_job_docs`] takes about two seconds.
pub const SLOW_WORKER: [&str; 6] = [
    "--mode",
    "jobs",
    "--minibatch-size",
    "4",
    "--max-batch-delay",
    "400ms",
];

/// A job whose minibatches never fill, so each waits the whole batch delay: chunks of 4
/// documents, 2 chunks in flight, leave 2 texts and 6 images queued against minibatches of 4.
pub fn slow_job_docs() -> Vec<clip_worker::protocol::WireDoc> {
    (0..40)
        .map(|i| {
            if i % 4 == 0 {
                text(&format!("t{i}"))
            } else {
                image(flat_png(i as u8, 1600, 1200))
            }
        })
        .collect()
}

/// A MessagePack map with string keys, for payloads the typed `Request` cannot express.
pub fn map(entries: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    rmpv::Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (rmpv::Value::from(k), v))
            .collect(),
    )
}

pub fn pack_value(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encode value");
    out
}

/// An all-white PNG: the failing fixture model's visual tower errors on it.
pub fn white_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// The error code of result document `i`.
pub fn doc_error(resp: &Response, i: usize) -> Option<(clip_worker::error::ErrorCode, &str)> {
    resp.docs[i]
        .error
        .as_ref()
        .map(|e| (e.code, e.message.as_str()))
}
