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

/// Admission by expected wait: while images are in flight, another image request that would
/// wait past `--max-queue-time` is refused at once, a text request (its tower is idle) is
/// served, and the image request is served once the backlog is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_would_wait_past_max_queue_time_are_refused_at_once() {
    let nats = NatsServer::start();
    let _worker = Worker::start(
        &nats.url,
        &[
            "--mode",
            "service",
            "--minibatch-size",
            "1",
            "--max-queue-time",
            "1us",
        ],
    );
    let client = connect(&nats.url).await;
    let busy = {
        let client = client.clone();
        let docs = (0..16).map(|i| image(flat_png(i, 1600, 1200))).collect();
        tokio::spawn(async move { call(&client, "clip.encode", &request(docs)).await })
    };
    // Wait until the sixteen images are admitted (all at once) and the image tower has run two
    // of them since its warm-up (its first run teaches admission nothing; the second does).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = service_stats(&client, "clip-worker", Duration::from_millis(20)).await;
        let data = stats.first().map(|s| &s["endpoints"][0]["data"]);
        let free = data.and_then(|d| d["available_doc_slots"].as_u64());
        let image_runs = data.and_then(|d| d["batches"]["image"]["batches"].as_u64());
        if free.is_some_and(|f| f < 2048) && image_runs.is_some_and(|n| n >= 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
    }
    let started = std::time::Instant::now();
    let (refused, headers) = call(
        &client,
        "clip.encode",
        &request(vec![image(png(9, 64, 48))]),
    )
    .await;
    let error = refused
        .error
        .expect("refused while sixteen images are ahead");
    assert_eq!(error.code, ErrorCode::Overloaded);
    assert!(error.message.contains("would wait"), "{}", error.message);
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("503")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    let (texts, _) = call(&client, "clip.encode", &request(vec![text("a caption")])).await;
    assert!(texts.error.is_none(), "{:?}", texts.error);

    let (busy, _) = busy.await.unwrap();
    assert!(busy.docs.iter().all(|d| d.embedding.is_some()), "{busy:?}");
    let (later, _) = call(
        &client,
        "clip.encode",
        &request(vec![image(png(9, 64, 48))]),
    )
    .await;
    assert!(later.error.is_none(), "{:?}", later.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_fail_only_their_document_and_name_the_field() {
    use rmpv::Value;
    let nats = NatsServer::start();
    let _worker = Worker::start(&nats.url, &["--mode", "service"]);
    let client = connect(&nats.url).await;

    let payload = pack_value(&map(vec![
        ("id", Value::from("req-1")),
        (
            "docs",
            Value::Array(vec![
                map(vec![("id", Value::from("a")), ("text", Value::from(42))]),
                map(vec![
                    ("id", Value::from("b")),
                    ("text", Value::from("fine")),
                ]),
                map(vec![
                    ("id", Value::from("c")),
                    ("blob", Value::from("iVBORw0KGgoAAAANSUhEUg==")),
                ]),
                map(vec![(
                    "tensor",
                    map(vec![
                        (
                            "shape",
                            Value::Array(vec![Value::from(2), Value::from("2")]),
                        ),
                        ("data", Value::Binary(vec![0; 12])),
                    ]),
                )]),
            ]),
        ),
    ]));
    let (resp, _) = call_raw(&client, "clip.encode", payload).await;
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.id.as_deref(), Some("req-1"));
    let ids: Vec<&str> = resp.docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "3"], "ids survive a bad document");
    assert_eq!(
        doc_error(&resp, 0),
        Some((
            ErrorCode::InvalidDocument,
            "docs[0].text: invalid type: integer `42`, expected a string"
        ))
    );
    assert!(
        resp.docs[1].embedding.is_some(),
        "the other documents are encoded"
    );
    let (code, msg) = doc_error(&resp, 2).unwrap();
    assert_eq!(code, ErrorCode::InvalidDocument);
    assert!(
        msg.starts_with("docs[2].blob: got a string where bytes belong")
            && msg.contains("MessagePack bin"),
        "{msg}"
    );
    let (code, msg) = doc_error(&resp, 3).unwrap();
    assert_eq!(code, ErrorCode::InvalidDocument);
    assert!(
        msg.starts_with("docs[3].tensor.shape[1]: invalid type: string \"2\""),
        "{msg}"
    );

    // Rank: a bad match fails alone; unreadable `matches` fails its query alone.
    let payload = pack_value(&map(vec![(
        "docs",
        Value::Array(vec![
            map(vec![
                ("text", Value::from("a query")),
                (
                    "matches",
                    Value::Array(vec![
                        map(vec![("id", Value::from("ok")), ("text", Value::from("x"))]),
                        map(vec![("id", Value::from("m")), ("uri", Value::from(7))]),
                    ]),
                ),
            ]),
            map(vec![
                ("id", Value::from("q2")),
                ("text", Value::from("another")),
                ("matches", Value::from("nope")),
            ]),
        ]),
    )]));
    let (resp, _) = call_raw(&client, "clip.rank", payload).await;
    assert!(resp.error.is_none(), "{:?}", resp.error);
    let matches = resp.docs[0].matches.as_ref().expect("matches");
    assert_eq!(matches[0].id, "ok");
    assert!(matches[0].scores.is_some());
    assert_eq!(matches[1].id, "m");
    assert_eq!(
        matches[1].error.as_ref().map(|e| e.message.as_str()),
        Some("docs[0].matches[1].uri: invalid type: integer `7`, expected a string")
    );
    assert_eq!(resp.docs[1].id, "q2");
    assert_eq!(
        doc_error(&resp, 1),
        Some((
            ErrorCode::InvalidDocument,
            "docs[1].matches: invalid type: a string, expected an array of documents"
        ))
    );
}

async fn next_reply(replies: &mut async_nats::Subscriber) -> async_nats::Message {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .expect("a reply")
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_echo_the_id_and_are_counted_in_service_stats() {
    use rmpv::Value;
    let nats = NatsServer::start();
    let _worker = Worker::start(&nats.url, &["--mode", "service"]);
    let client = connect(&nats.url).await;

    // Each reply arrives on our own inbox, so a stray second message would show up.
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    let ask = |payload: Vec<u8>| {
        let client = client.clone();
        let inbox = inbox.clone();
        async move {
            client
                .publish_with_reply("clip.encode", inbox, payload.into())
                .await
                .unwrap();
        }
    };

    // No `docs`: refused, with the id echoed.
    ask(pack_value(&map(vec![("id", Value::from("no-docs"))]))).await;
    let m = next_reply(&mut replies).await;
    let resp = clip_worker::protocol::decode_response(&m.payload).unwrap();
    assert_eq!(resp.id.as_deref(), Some("no-docs"));
    let err = resp.error.expect("a request error");
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.message.starts_with("docs: missing"), "{}", err.message);
    let headers = m.headers.expect("headers");
    assert_eq!(
        headers.get("Nats-Service-Error-Code").map(|v| v.as_str()),
        Some("400")
    );
    assert_eq!(
        headers.get("Nats-Service-Error").map(|v| v.as_str()),
        Some(err.message.as_str())
    );

    // A bad param: refused, id echoed, the field named.
    ask(pack_value(&map(vec![
        ("id", Value::from("bad-param")),
        ("docs", Value::Array(vec![])),
        ("params", map(vec![("normalize", Value::from("yes"))])),
    ])))
    .await;
    let m = next_reply(&mut replies).await;
    let resp = clip_worker::protocol::decode_response(&m.payload).unwrap();
    assert_eq!(resp.id.as_deref(), Some("bad-param"));
    let last = resp.error.expect("a request error").message;
    assert_eq!(
        last,
        "params.normalize: invalid type: string \"yes\", expected a boolean"
    );

    // The next message on the inbox is the next reply: an error is answered exactly once.
    ask(pack_value(&map(vec![(
        "docs",
        Value::Array(vec![map(vec![("text", Value::from("hello"))])]),
    )])))
    .await;
    let m = next_reply(&mut replies).await;
    let resp = clip_worker::protocol::decode_response(&m.payload).unwrap();
    assert!(resp.error.is_none() && resp.docs[0].embedding.is_some());

    let stats = service_stats(&client, "clip-worker", Duration::from_millis(500)).await;
    assert_eq!(stats.len(), 1, "{stats:?}");
    let encode = stats[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == "clip.encode")
        .unwrap()
        .clone();
    assert_eq!(encode["num_requests"], 3, "{encode}");
    assert_eq!(encode["num_errors"], 2, "{encode}");
    assert_eq!(encode["last_error"], format!("400:{last}"), "{encode}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_error_fails_its_documents_and_the_worker_keeps_serving() {
    let nats = NatsServer::start();
    let model = common::failing_model_dir();
    let _worker = Worker::start_with_model(model.path(), &nats.url, &["--mode", "service"]);
    let client = connect(&nats.url).await;

    let (resp, headers) = call(
        &client,
        "clip.encode",
        &request(vec![with_id(image(white_png(64, 48)), "white")]),
    )
    .await;
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert!(headers.get("Nats-Service-Error").is_none());
    let (code, msg) = doc_error(&resp, 0).expect("an inference error");
    assert_eq!(code, ErrorCode::Inference);
    assert!(msg.contains("Gather"), "ONNX Runtime's own message: {msg}");

    let (resp, _) = call(
        &client,
        "clip.encode",
        &request(vec![image(png(1, 64, 48)), text("still serving")]),
    )
    .await;
    assert!(resp.docs.iter().all(|d| d.embedding.is_some()), "{resp:?}");
}

fn uri(u: &str) -> WireDoc {
    WireDoc {
        uri: Some(u.to_string()),
        ..Default::default()
    }
}

/// A document's label and, when it must fail, its error code and parts of its message.
type Expected<'a> = (&'a str, Option<(ErrorCode, &'a [&'a str])>);

/// Asserts which documents were embedded and which failed with what code and message parts.
fn expect_docs(resp: &clip_worker::protocol::Response, want: &[Expected<'_>]) {
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert_eq!(resp.docs.len(), want.len());
    for (i, (label, expected)) in want.iter().enumerate() {
        let got = doc_error(resp, i);
        match expected {
            None => assert!(
                resp.docs[i].embedding.is_some(),
                "{label}: expected an embedding, got {got:?}"
            ),
            Some((code, parts)) => {
                let (c, message) = got.unwrap_or_else(|| panic!("{label}: no error"));
                assert_eq!(c, *code, "{label}: {message}");
                for p in *parts {
                    assert!(message.contains(p), "{label}: `{p}` not in `{message}`");
                }
            }
        }
    }
}

/// The URI policy of `serve`: addresses checked after resolution and at every redirect, the
/// opt-ins (flags and environment twins), fetch limits, and local files under a root only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_policy_refuses_non_public_addresses_and_local_paths_unless_opened_up() {
    use common::http::FileServer;
    let nats = NatsServer::start();
    let files = FileServer::start();
    let port = files
        .base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let lo = |p: &str| format!("http://127.0.0.1:{port}/{p}");
    let named = |p: &str| format!("http://localhost:{port}/{p}");
    files.put("cat.png", png(3, 64, 48));
    files.put_typed("typed.png", png(4, 64, 48), "image/png");
    files.put_typed(
        "page.png",
        b"<html>nope</html>".to_vec(),
        "text/html; charset=utf-8",
    );
    files.put("big.png", vec![0; 300 * 1024]);
    files.put_unannounced("endless.png", vec![0; 300 * 1024]);
    files.redirect("to-loopback", &lo("cat.png"));
    files.redirect("to-named", &named("cat.png"));
    files.redirect("loop", &lo("loop"));
    files.redirect("to-file", "file:///etc/passwd");
    let slow = FileServer::start();
    slow.put("slow.png", vec![0; 64 * 1024]);
    slow.throttle(Duration::from_secs(1));

    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("inside.png"), png(5, 32, 32)).unwrap();
    let secret = outside.path().join("secret.png");
    std::fs::write(&secret, png(6, 32, 32)).unwrap();
    std::os::unix::fs::symlink(&secret, root.path().join("link.png")).unwrap();
    let root_str = root.path().to_str().unwrap();

    let service = ["--mode", "service"];
    let strict = Worker::spawn(
        &nats.url,
        &[&service[..], &["--prefix", "strict"]].concat(),
        &[],
    );
    let open = Worker::spawn(
        &nats.url,
        &[
            &service[..],
            &[
                "--prefix",
                "open",
                "--allow-private-networks",
                "--fetch-timeout",
                "1500ms",
            ],
            &["--max-doc-bytes", "204800", "--max-redirects", "3"],
        ]
        .concat(),
        &[],
    );
    let hosts = Worker::spawn(
        &nats.url,
        &[&service[..], &["--prefix", "hosts"]].concat(),
        &[
            ("CLIP_WORKER_ALLOW_URI_HOSTS", "LocalHost,example.invalid"),
            ("CLIP_WORKER_ALLOW_LOCAL_ROOT", root_str),
        ],
    );
    for w in [&strict, &open, &hosts] {
        w.wait_for_log("clip-worker ready", Duration::from_secs(60));
    }
    let client = connect(&nats.url).await;
    let refused = Some(ErrorCode::UriRefused);

    // By default: nothing but public addresses, whatever the name, and no local files.
    let inside = root.path().join("inside.png");
    let inside = inside.to_str().unwrap();
    let (resp, _) = call(
        &client,
        "strict.encode",
        &request(vec![
            uri(&lo("cat.png")),
            uri(&named("cat.png")),
            uri(&format!("http://[::1]:{port}/cat.png")),
            uri("http://169.254.169.254/latest/meta-data/"),
            uri("http://[::ffff:10.1.2.3]/a.png"),
            uri(inside),
            uri(&format!("file://{inside}")),
            text("still served"),
        ]),
    )
    .await;
    expect_docs(
        &resp,
        &[
            (
                "loopback ip",
                refused.map(|c| (c, &["127.0.0.1", "loopback"][..])),
            ),
            (
                "loopback name",
                refused.map(|c| (c, &["`localhost`", "loopback"][..])),
            ),
            (
                "ipv6 loopback",
                refused.map(|c| (c, &["::1", "loopback"][..])),
            ),
            (
                "metadata",
                refused.map(|c| (c, &["169.254.169.254", "cloud metadata"][..])),
            ),
            (
                "mapped private",
                refused.map(|c| (c, &["private network"][..])),
            ),
            ("local path", refused.map(|c| (c, &["local"][..]))),
            ("file uri", refused.map(|c| (c, &["local"][..]))),
            ("text", None),
        ],
    );
    assert!(files.requests().is_empty(), "{:?}", files.requests());

    // Private networks opened: fetched, within the limits.
    let (resp, _) = call(
        &client,
        "open.encode",
        &request(vec![
            uri(&lo("cat.png")),
            uri(&lo("typed.png")),
            uri(&lo("to-named")),
            uri(&lo("page.png")),
            uri(&lo("big.png")),
            uri(&lo("endless.png")),
            uri(&format!("{}slow.png", slow.base)),
            uri(&lo("loop")),
            uri(&lo("to-file")),
            uri(&lo("missing.png")),
            uri("http://169.254.169.254/latest/meta-data/"),
        ]),
    )
    .await;
    expect_docs(
        &resp,
        &[
            ("loopback", None),
            ("image/png", None),
            ("redirect to a name", None),
            (
                "html",
                Some((ErrorCode::InvalidDocument, &["text/html", "not an image"])),
            ),
            (
                "announced too large",
                Some((ErrorCode::TooLarge, &["307200", "204800"])),
            ),
            (
                "unannounced too large",
                Some((ErrorCode::TooLarge, &["204800"])),
            ),
            ("slow", Some((ErrorCode::Fetch, &["slow.png", "in time"]))),
            ("redirect loop", Some((ErrorCode::Fetch, &["more than 3"]))),
            (
                "redirect to file:",
                refused.map(|c| (c, &["not an http(s) URL"][..])),
            ),
            ("404", Some((ErrorCode::Fetch, &["HTTP 404"]))),
            (
                "metadata stays closed",
                refused.map(|c| (c, &["cloud metadata"][..])),
            ),
        ],
    );
    assert_eq!(
        files.requests_for("loop").len(),
        4,
        "the first request and 3 redirects"
    );

    // Listed hosts may resolve anywhere, but a redirect off them is checked again; local
    // files under the root only.
    let (resp, _) = call(
        &client,
        "hosts.encode",
        &request(vec![
            uri(&named("cat.png")),
            uri(&lo("cat.png")),
            uri(&named("to-loopback")),
            uri(inside),
            uri("inside.png"),
            uri(&format!("file://{inside}")),
            uri(&format!(
                "{root_str}/../{}/secret.png",
                outside.path().file_name().unwrap().to_str().unwrap()
            )),
            uri("link.png"),
            uri(secret.to_str().unwrap()),
        ]),
    )
    .await;
    expect_docs(
        &resp,
        &[
            ("listed name", None),
            (
                "unlisted ip",
                refused.map(|c| (c, &["127.0.0.1", "loopback"][..])),
            ),
            (
                "redirect off the list",
                refused.map(|c| (c, &["redirected", "127.0.0.1"][..])),
            ),
            ("under the root", None),
            ("relative to the root", None),
            ("file uri under the root", None),
            ("dot-dot", refused.map(|c| (c, &[".."][..]))),
            ("symlink out", refused.map(|c| (c, &["outside"][..]))),
            ("absolute outside", refused.map(|c| (c, &["outside"][..]))),
        ],
    );
}
