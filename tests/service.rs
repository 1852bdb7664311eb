//! Request/reply through a real nats-server: encode, rank, errors, queue groups, coalescing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clip_worker::error::ErrorCode;
use clip_worker::protocol::{EmbeddingDtype, Params, WireDoc};
use common::client::*;
use common::{NatsServer, Worker};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_and_rank_by_request_reply_with_per_document_errors() {
    let nats = NatsServer::start();
    let _worker = Worker::start(&nats.url, &["--mode", "service"]);
    let client = connect(&nats.url).await;

    let req = request(vec![
        with_id(text("a photo of a cat"), "t"),
        with_id(image(png(1, 64, 48)), "i"),
        with_id(image(b"definitely not an image".to_vec()), "bad"),
        with_id(WireDoc::default(), "empty"),
        text("no id: position is the id"),
    ]);
    let (resp, headers) = call(&client, "clip.encode", &req).await;
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(headers.get("Clip-Protocol").map(|v| v.as_str()), Some("1"));
    assert_eq!(resp.model, "ViT-B-32::openai");
    let ids: Vec<&str> = resp.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["t", "i", "bad", "empty", "4"]);
    let dim = embedding(&resp, 0).len();
    assert!(dim > 0);
    assert_eq!(embedding(&resp, 1).len(), dim);
    assert_eq!(resp.docs[0].modality.map(|m| m.as_str()), Some("text"));
    assert_eq!(resp.docs[1].modality.map(|m| m.as_str()), Some("image"));
    assert_eq!(
        resp.docs[2].error.as_ref().map(|e| e.code),
        Some(ErrorCode::ImageDecode)
    );
    assert_eq!(
        resp.docs[3].error.as_ref().map(|e| e.code),
        Some(ErrorCode::EmptyDocument)
    );
    assert!(resp.docs[4].embedding.is_some());

    // Normalised f16 output: unit norm, same direction as the raw f32 embedding.
    let mut req2 = request(vec![text("a photo of a cat")]);
    req2.params = Some(Params {
        normalize: Some(true),
        embedding_dtype: Some(EmbeddingDtype::F16),
        model: None,
    });
    let (resp2, _) = call(&client, "clip.encode", &req2).await;
    let e = resp2.docs[0].embedding.as_ref().unwrap();
    assert_eq!(e.dtype, EmbeddingDtype::F16);
    assert_eq!(e.data.len(), dim * 2);
    let v = e.to_f32();
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-2, "norm {norm}");
    assert!(cosine(&v, &embedding(&resp, 0)) > 0.999);

    // Rank: an image root with text matches, re-ordered by clip_score, softmax sums to one.
    let texts = [
        "hello, world!",
        "goodbye, world!",
        "goodbye,!",
        "good world!",
        "good!",
        "world!",
    ];
    let mut root = with_id(image(png(2, 80, 60)), "root");
    root.matches = texts.iter().map(|t| with_id(text(t), t)).collect();
    let (ranked, _) = call(&client, "clip.rank", &request(vec![root])).await;
    assert!(ranked.error.is_none(), "{:?}", ranked.error);
    let matches = ranked.docs[0].matches.as_ref().expect("matches");
    assert_eq!(matches.len(), texts.len());
    let scores: Vec<f64> = matches
        .iter()
        .map(|m| m.scores.as_ref().unwrap().clip_score)
        .collect();
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for m in matches {
        let c = m.scores.as_ref().unwrap().clip_score_cosine;
        assert!((-1.0..=1.0).contains(&c));
        assert!(m.embedding.is_none(), "match embeddings are not returned");
    }
    assert!(
        ranked.docs[0].embedding.is_some(),
        "the root keeps its embedding"
    );

    // A rank root without matches is an error for that root only.
    let (r, _) = call(&client, "clip.rank", &request(vec![text("lonely")])).await;
    assert_eq!(
        r.docs[0].error.as_ref().map(|e| e.code),
        Some(ErrorCode::InvalidDocument)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_request_level_errors_and_the_worker_keeps_serving() {
    let nats = NatsServer::start();
    let _worker = Worker::start(
        &nats.url,
        &["--mode", "service", "--max-docs-per-request", "8"],
    );
    let client = connect(&nats.url).await;

    let (resp, headers) = call_raw(&client, "clip.encode", b"\xc1 garbage".to_vec()).await;
    assert_eq!(
        resp.error.as_ref().map(|e| e.code),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("400")
    );
    assert!(resp.docs.is_empty());

    let too_many = request((0..9).map(|i| text(&format!("t{i}"))).collect());
    let (resp, headers) = call(&client, "clip.encode", &too_many).await;
    assert_eq!(
        resp.error.as_ref().map(|e| e.code),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("413")
    );

    let mut wrong_model = request(vec![text("x")]);
    wrong_model.params = Some(Params {
        model: Some("RN50::openai".into()),
        ..Default::default()
    });
    let (resp, _) = call(&client, "clip.encode", &wrong_model).await;
    assert_eq!(
        resp.error.as_ref().map(|e| e.code),
        Some(ErrorCode::ModelMismatch)
    );

    // A tensor with a bad shape fails alone.
    let bad_tensor = WireDoc {
        tensor: Some(clip_worker::protocol::WireTensor {
            dtype: "uint8".into(),
            shape: vec![4, 4, 3],
            data: vec![0; 5],
        }),
        ..Default::default()
    };
    let (resp, _) = call(
        &client,
        "clip.encode",
        &request(vec![bad_tensor, text("fine")]),
    )
    .await;
    assert!(resp.docs[0].error.is_some());
    assert!(resp.docs[1].embedding.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_queue_group_and_concurrent_requests_are_coalesced() {
    let nats = NatsServer::start();
    let args = ["--mode", "service", "--max-batch-delay", "100ms"];
    let _a = Worker::start(&nats.url, &args);
    let _b = Worker::start(&nats.url, &args);
    let client = connect(&nats.url).await;

    let calls = (0..48).map(|i| {
        let client = client.clone();
        async move {
            let (resp, _) = call(
                &client,
                "clip.encode",
                &request(vec![text(&format!("sentence number {i}"))]),
            )
            .await;
            embedding(&resp, 0).len()
        }
    });
    let dims = futures::future::join_all(calls).await;
    assert!(dims.iter().all(|d| *d == dims[0] && *d > 0));

    let stats = service_stats(&client, "clip-worker", Duration::from_millis(500)).await;
    assert_eq!(stats.len(), 2, "both workers answer $SRV.STATS: {stats:?}");
    let mut served = Vec::new();
    let mut max_batch = 0;
    for s in &stats {
        let endpoints = s["endpoints"].as_array().unwrap();
        let encode = endpoints
            .iter()
            .find(|e| e["subject"] == "clip.encode")
            .unwrap();
        served.push(encode["num_requests"].as_u64().unwrap());
        let batch = encode["data"]["batches"]["text"]["max_batch"].as_u64();
        max_batch = max_batch.max(batch.unwrap_or_else(|| panic!("no batch stats in {s}")));
    }
    assert_eq!(served.iter().sum::<u64>(), 48, "{served:?}");
    assert!(
        served.iter().all(|n| *n > 0),
        "both workers took requests: {served:?}"
    );
    assert!(
        max_batch > 1,
        "single-document requests were coalesced into batches: max {max_batch}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_max_payload_becomes_a_too_large_error_instead_of_a_timeout() {
    let nats = NatsServer::start_with(Some(8 * 1024));
    let _worker = Worker::start(&nats.url, &["--mode", "service"]);
    let client = connect(&nats.url).await;
    let docs = (0..100).map(|i| text(&format!("t{i}"))).collect();
    let (resp, headers) = call(&client, "clip.encode", &request(docs)).await;
    assert_eq!(
        resp.error.as_ref().map(|e| e.code),
        Some(ErrorCode::TooLarge),
        "{:?}",
        resp.error
    );
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("413")
    );
    // A request that fits is still served.
    let (resp, _) = call(&client, "clip.encode", &request(vec![text("small")])).await;
    assert!(resp.docs[0].embedding.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_does_not_starve_a_small_one() {
    let nats = NatsServer::start_with(Some(8 * 1024 * 1024));
    let _worker = Worker::start(&nats.url, &["--mode", "service"]);
    let client = connect(&nats.url).await;
    let big = request((0..256).map(|i| image(png(i as u8, 160, 120))).collect());
    let big_client = client.clone();
    let big_call = tokio::spawn(async move {
        let (resp, _) = call(&big_client, "clip.encode", &big).await;
        (tokio::time::Instant::now(), resp)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (small, _) = call(
        &client,
        "clip.encode",
        &request(vec![text("quick question")]),
    )
    .await;
    let small_done = tokio::time::Instant::now();
    assert!(small.docs[0].embedding.is_some());
    let (big_done, big) = big_call.await.unwrap();
    assert_eq!(big.docs.len(), 256);
    assert!(big.docs.iter().all(|d| d.embedding.is_some()));
    assert!(
        small_done < big_done,
        "the small request was answered while the large one was still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_answers_overloaded_at_once() {
    let nats = NatsServer::start();
    let _worker = Worker::start(
        &nats.url,
        &[
            "--mode",
            "service",
            "--max-inflight-docs",
            "4",
            "--minibatch-size",
            "4",
        ],
    );
    let client = connect(&nats.url).await;
    let calls = (0..12).map(|i| {
        let client = client.clone();
        async move {
            let docs = (0..4).map(|k| image(png(i * 4 + k, 200, 150))).collect();
            call(&client, "clip.encode", &request(docs)).await
        }
    });
    let results = futures::future::join_all(calls).await;
    let overloaded: Vec<_> = results
        .iter()
        .filter(|(r, _)| r.error.as_ref().map(|e| e.code) == Some(ErrorCode::Overloaded))
        .collect();
    assert!(
        !overloaded.is_empty(),
        "some requests found the worker full"
    );
    for (_, headers) in &overloaded {
        assert_eq!(
            headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
            Some("503")
        );
    }
    let served = results.iter().filter(|(r, _)| r.error.is_none()).count();
    assert!(served > 0);
    assert!(results
        .iter()
        .filter(|(r, _)| r.error.is_none())
        .all(|(r, _)| r.docs.iter().all(|d| d.embedding.is_some())));
    assert_eq!(
        served + overloaded.len(),
        12,
        "every request got a definite answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_authenticates_with_a_token() {
    let nats = NatsServer::start_with_args(&["--auth", "s3cret-token"]);
    let _worker = Worker::start(
        &nats.url,
        &["--mode", "service", "--nats-token", "s3cret-token"],
    );
    let client = async_nats::ConnectOptions::with_token("s3cret-token".into())
        .connect(&nats.url)
        .await
        .expect("connect with token");
    let (resp, _) = call(
        &client,
        "clip.encode",
        &request(vec![text("authenticated")]),
    )
    .await;
    assert!(resp.docs[0].embedding.is_some());
}
