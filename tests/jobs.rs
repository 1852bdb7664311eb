//! Durable jobs through JetStream with a real nats-server: results, crashes, restarts, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_nats::jetstream::{self, consumer, stream};
use clip_worker::error::ErrorCode;
use clip_worker::protocol::{self, Request, Response};
use common::client::*;
use common::{NatsServer, Worker};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// A stream that keeps every result (`results.>`), de-duplicated by `Nats-Msg-Id`.
async fn results_stream(js: &jetstream::Context) {
    js.get_or_create_stream(stream::Config {
        name: "RESULTS".into(),
        subjects: vec!["results.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("results stream");
}

/// Publishes a job (retrying while the server is away) and returns once JetStream stored it.
async fn submit(js: &jetstream::Context, kind: &str, job_id: &str, reply: &str, req: &Request) {
    submit_raw(js, kind, job_id, reply, protocol::encode(req).unwrap()).await;
}

/// [`submit`] for a payload built by hand.
async fn submit_raw(
    js: &jetstream::Context,
    kind: &str,
    job_id: &str,
    reply: &str,
    payload: Vec<u8>,
) {
    for _ in 0..100 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Clip-Reply-To", reply);
        headers.insert("Nats-Msg-Id", job_id);
        match js
            .publish_with_headers(format!("clip.jobs.{kind}"), headers, payload.clone().into())
            .await
        {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(e) => eprintln!("job {job_id}: publish ack: {e}"),
            },
            Err(e) => eprintln!("job {job_id} ({} bytes): publish: {e}", payload.len()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("job {job_id} could not be published");
}

/// Reads every result stored so far: job id → (how many copies, last response).
async fn read_results(
    js: &jetstream::Context,
    expect: usize,
    wait: Duration,
) -> BTreeMap<String, (usize, Response)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut out: BTreeMap<String, (usize, Response)> = BTreeMap::new();
        if let Ok(stream) = js.get_stream("RESULTS").await {
            let c = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .expect("ordered consumer");
            let mut messages = c.messages().await.expect("messages");
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_millis(500), messages.next()).await
            {
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Clip-Job-Id"))
                    .map(|v| v.to_string())
                    .expect("Clip-Job-Id header");
                let resp = protocol::decode_response(&m.payload).expect("decode result");
                let e = out.entry(id).or_insert((0, resp.clone()));
                e.0 += 1;
                e.1 = resp;
            }
        }
        if out.len() >= expect || tokio::time::Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_and_rank_as_jobs_with_error_results_for_bad_jobs() {
    let nats = NatsServer::start();
    let _w = Worker::start(&nats.url, &["--mode", "jobs"]);
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    submit(
        &js,
        "encode",
        "enc-1",
        "results.enc-1",
        &request(vec![text("hello"), image(png(3, 40, 40))]),
    )
    .await;
    let mut root = text("a red square");
    root.matches = vec![
        with_id(image(png(4, 30, 30)), "a"),
        with_id(image(png(5, 50, 20)), "b"),
    ];
    submit(
        &js,
        "rank",
        "rank-1",
        "results.rank-1",
        &request(vec![root]),
    )
    .await;
    // A job that can never succeed: answered with an error and terminated, not retried forever.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Clip-Reply-To", "results.bad-1");
    h.insert("Nats-Msg-Id", "bad-1");
    js.publish_with_headers("clip.jobs.encode", h, "not msgpack".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let results = read_results(&js, 3, Duration::from_secs(30)).await;
    assert_eq!(results.len(), 3, "{:?}", results.keys());
    let (n, enc) = &results["enc-1"];
    assert_eq!(*n, 1);
    assert_eq!(enc.docs.len(), 2);
    assert!(enc.docs.iter().all(|d| d.embedding.is_some()));
    let (_, rank) = &results["rank-1"];
    assert_eq!(rank.docs[0].matches.as_ref().unwrap().len(), 2);
    let (_, bad) = &results["bad-1"];
    assert_eq!(
        bad.error.as_ref().map(|e| e.code),
        Some(ErrorCode::BadRequest)
    );

    // Every job was acknowledged or terminated: the work queue is empty.
    let mut s = js.get_stream("CLIP_JOBS").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.info().await.unwrap().state.messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_killed_worker_is_redelivered_and_completed_once() {
    // A large job (servers often raise max_payload to 8 MB for this), so the worker is still busy
    // with it when it dies.
    let nats = NatsServer::start_with(Some(8 * 1024 * 1024));
    let mut a = Worker::start(&nats.url, &["--mode", "jobs", "--ack-wait", "2s"]);
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    let docs = (0..300).map(|i| image(png(i as u8, 160, 120))).collect();
    submit(&js, "encode", "big-1", "results.big-1", &request(docs)).await;
    a.wait_for_log("job received", Duration::from_secs(20));
    a.signal("KILL");
    assert_eq!(
        a.wait_exit(Duration::from_secs(10)),
        None,
        "killed, no exit code"
    );
    let early = read_results(&js, 0, Duration::ZERO).await;
    assert!(
        early.is_empty(),
        "the job was still in progress when its worker died"
    );

    let _b = Worker::start(&nats.url, &["--mode", "jobs", "--ack-wait", "2s"]);
    let results = read_results(&js, 1, Duration::from_secs(90)).await;
    let (copies, resp) = results
        .get("big-1")
        .expect("the job completed on the second worker");
    assert_eq!(*copies, 1, "exactly one result");
    assert_eq!(resp.docs.len(), 300);
    assert!(resp.docs.iter().all(|d| d.embedding.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_load_loses_no_job() {
    let mut nats = NatsServer::start();
    let _w = Worker::start(&nats.url, &["--mode", "jobs", "--ack-wait", "3s"]);
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    let total = 40;
    for i in 0..total {
        if i == total / 2 {
            nats.restart(Duration::from_millis(500));
        }
        let id = format!("job-{i}");
        let req = request(vec![
            text(&format!("sentence {i}")),
            image(png(i as u8, 48, 48)),
        ]);
        submit(&js, "encode", &id, &format!("results.{id}"), &req).await;
    }
    let results = read_results(&js, total, Duration::from_secs(90)).await;
    let missing: Vec<String> = (0..total)
        .map(|i| format!("job-{i}"))
        .filter(|id| !results.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "jobs without a result: {missing:?}");
    assert!(results
        .values()
        .all(|(n, r)| *n == 1 && r.docs.iter().all(|d| d.embedding.is_some())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_in_flight_requests_and_leaves_no_job_behind() {
    let nats = NatsServer::start();
    let mut w = Worker::start(
        &nats.url,
        &["--ack-wait", "2s", "--shutdown-timeout", "20s"],
    );
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    let jobs = 20;
    for i in 0..jobs {
        let id = format!("term-{i}");
        let docs = (0..8)
            .map(|k| image(png((i * 8 + k) as u8, 160, 120)))
            .collect();
        submit(&js, "encode", &id, &format!("results.{id}"), &request(docs)).await;
    }
    // Interactive calls in flight when the signal lands.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let payload =
                    protocol::encode(&request(vec![image(png(i, 200, 150)), text("x")])).unwrap();
                client
                    .request("clip.encode".to_string(), payload.into())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.signal("TERM");
    let code = w.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "graceful exit");

    let mut answered = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(m) => {
                let r = protocol::decode_response(&m.payload).unwrap();
                assert!(r.error.is_none(), "{:?}", r.error);
                answered += 1;
            }
            // Sent after the worker stopped listening: nobody took it, nothing was lost.
            Err(e) => assert!(
                matches!(e.kind(), async_nats::RequestErrorKind::NoResponders),
                "request failed: {e}"
            ),
        }
    }
    assert!(
        answered > 0,
        "requests received before the signal were answered"
    );

    // Whatever the first worker did not finish is still in the stream: a new worker completes it.
    let _w2 = Worker::start(&nats.url, &["--mode", "jobs", "--ack-wait", "2s"]);
    let results = read_results(&js, jobs, Duration::from_secs(90)).await;
    assert_eq!(results.len(), jobs, "every job has a result");
    assert!(
        results.values().all(|(n, _)| *n == 1),
        "no duplicate results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_is_kept_alive_by_in_progress_acks() {
    let nats = NatsServer::start_with(Some(8 * 1024 * 1024));
    // The job takes several ack-wait periods; without in-progress acks it would be redelivered.
    let w = Worker::start(
        &nats.url,
        &[&SLOW_WORKER[..], &["--ack-wait", "1s"]].concat(),
    );
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;
    let docs = slow_job_docs();
    let started = std::time::Instant::now();
    submit(&js, "encode", "long-1", "results.long-1", &request(docs)).await;
    let results = read_results(&js, 1, Duration::from_secs(120)).await;
    let took = started.elapsed();
    let (copies, resp) = results.get("long-1").expect("result");
    assert_eq!(*copies, 1);
    assert_eq!(resp.docs.len(), 40);
    let log = w.log.lock().unwrap().join("\n");
    assert!(
        took > Duration::from_secs(1),
        "the job outlasted the 1 s ack wait ({took:?})"
    );
    assert_eq!(
        log.matches("job received").count(),
        1,
        "delivered only once:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_bind_to_an_existing_stream_and_consumer_when_told_to() {
    let nats = NatsServer::start();
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    // Binding to something that does not exist fails at start-up with a clear message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .args([
            "serve",
            "--mode",
            "jobs",
            "--bind-existing",
            "--stream",
            "MY_JOBS",
            "--consumer",
            "mine",
        ])
        .args(["--nats-url", &nats.url, "--device", "cpu"])
        .args(["--metrics-addr", "off"])
        .arg("--model-dir")
        .arg(common::fixture_model_dir())
        .current_dir(common::repo_root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JetStream setup"));

    // Provisioned by an operator, with its own names and settings.
    let stream = js
        .create_stream(stream::Config {
            name: "MY_JOBS".into(),
            subjects: vec!["clip.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("mine".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let _w = Worker::start(
        &nats.url,
        &[
            "--mode",
            "jobs",
            "--bind-existing",
            "--stream",
            "MY_JOBS",
            "--consumer",
            "mine",
        ],
    );
    submit(
        &js,
        "encode",
        "bound-1",
        "results.bound-1",
        &request(vec![text("hello")]),
    )
    .await;
    let results = read_results(&js, 1, Duration::from_secs(30)).await;
    assert!(results["bound-1"].1.docs[0].embedding.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_bounds_the_exit_and_unfinished_jobs_go_to_another_worker() {
    let nats = NatsServer::start();
    // A slow job (see `slow_job_docs`) that cannot finish within the shutdown deadline.
    let slow = [&SLOW_WORKER[..], &["--ack-wait", "2s"]].concat();
    let mut w = Worker::start(
        &nats.url,
        &[&slow[..], &["--shutdown-timeout", "300ms"]].concat(),
    );
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;
    let docs = slow_job_docs();
    submit(&js, "encode", "slow-1", "results.slow-1", &request(docs)).await;
    w.wait_for_log("job received", Duration::from_secs(20));
    let signalled = std::time::Instant::now();
    w.signal("TERM");
    assert_eq!(
        w.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exit 0 even with work in flight"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "exited within the deadline: {:?}",
        signalled.elapsed()
    );
    assert!(
        read_results(&js, 0, Duration::ZERO).await.is_empty(),
        "the job was not finished"
    );

    let _w2 = Worker::start(&nats.url, &slow);
    let results = read_results(&js, 1, Duration::from_secs(60)).await;
    let (copies, resp) = results.get("slow-1").expect("completed by the next worker");
    assert_eq!(*copies, 1);
    assert!(resp.docs.iter().all(|d| d.embedding.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_errors_inference_retries_field_paths_and_request_ids() {
    use rmpv::Value;
    let nats = NatsServer::start();
    let model = common::failing_model_dir();
    let worker = Worker::start_with_model(
        model.path(),
        &nats.url,
        &[
            "--mode",
            "jobs",
            "--max-deliver",
            "2",
            "--nak-delay",
            "100ms",
        ],
    );
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    // ONNX Runtime fails on the white image: retried, then the error is the result.
    let req = request(vec![
        with_id(image(white_png(40, 30)), "white"),
        text("fine"),
    ]);
    submit(&js, "encode", "white-1", "results.white-1", &req).await;
    // No `docs`: a bad request that still carries its id.
    let no_docs = pack_value(&map(vec![("id", Value::from("r-9"))]));
    submit_raw(&js, "encode", "no-docs-1", "results.no-docs-1", no_docs).await;
    // A wrong type fails one document; not transient, so delivered once.
    let types = pack_value(&map(vec![(
        "docs",
        Value::Array(vec![
            map(vec![("text", Value::from(42))]),
            map(vec![("text", Value::from("ok"))]),
        ]),
    )]));
    submit_raw(&js, "encode", "types-1", "results.types-1", types).await;

    let results = read_results(&js, 3, Duration::from_secs(60)).await;
    assert_eq!(results.len(), 3, "{:?}", results.keys());

    let (_, white) = &results["white-1"];
    assert_eq!(
        doc_error(white, 0).map(|(code, _)| code),
        Some(ErrorCode::Inference)
    );
    assert!(white.docs[1].embedding.is_some());
    let deliveries = |job: &str| {
        worker
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("job received") && l.contains(job))
            .count()
    };
    assert_eq!(deliveries("white-1"), 2, "retried up to --max-deliver");

    let (_, no_docs) = &results["no-docs-1"];
    assert_eq!(no_docs.id.as_deref(), Some("r-9"));
    assert_eq!(
        no_docs.error.as_ref().map(|e| e.code),
        Some(ErrorCode::BadRequest)
    );

    let (_, types) = &results["types-1"];
    assert_eq!(
        doc_error(types, 0),
        Some((
            ErrorCode::InvalidDocument,
            "docs[0].text: invalid type: integer `42`, expected a string"
        ))
    );
    assert!(types.docs[1].embedding.is_some());
    assert_eq!(deliveries("types-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signals_are_honoured_whatever_nats_does() {
    let mut nats = NatsServer::start();
    nats.stop();

    // Waiting for a NATS server that is not there: a signal stops it, cleanly.
    let mut waiting = Worker::spawn(&nats.url, &["--mode", "jobs"], &[]);
    waiting.wait_for_log("NATS not reachable yet", Duration::from_secs(60));
    waiting.signal("TERM");
    assert_eq!(waiting.wait_exit(Duration::from_secs(10)), Some(0));
    waiting.wait_for_log("shutdown requested during start-up", Duration::from_secs(5));

    nats.restart(Duration::ZERO);
    let deadline = Duration::from_secs(2);
    let mut w = Worker::start(&nats.url, &["--shutdown-timeout", "2s"]);
    let mut patient = Worker::start(&nats.url, &["--shutdown-timeout", "10m"]);
    nats.stop();
    w.wait_for_log("disconnected from NATS", Duration::from_secs(20));
    patient.wait_for_log("disconnected from NATS", Duration::from_secs(20));

    // The final flush cannot complete while the client reconnects: the deadline still holds.
    let signalled = std::time::Instant::now();
    w.signal("TERM");
    assert_eq!(
        w.wait_exit(Duration::from_secs(30)),
        Some(0),
        "graceful exit"
    );
    let took = signalled.elapsed();
    assert!(
        took < deadline + Duration::from_secs(3),
        "stopped {took:?} after SIGTERM with a {deadline:?} deadline"
    );

    // A second signal ends a drain that would otherwise wait ten minutes.
    patient.signal("TERM");
    patient.wait_for_log("shutdown requested", Duration::from_secs(10));
    assert!(
        patient.is_running(),
        "still draining after the first signal"
    );
    patient.signal("INT");
    let code = patient.wait_exit(Duration::from_secs(10));
    assert!(
        matches!(code, Some(c) if c != 0),
        "a second signal exits at once, non-zero: {code:?}"
    );
    patient.wait_for_log("second stop signal", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_nats_waits_for_it_then_serves() {
    use common::probe::{get, metrics_addr, wait_for};
    let mut nats = NatsServer::start();
    nats.stop();
    let mut w = Worker::spawn(&nats.url, &[], &[]);
    let addr = metrics_addr(&w);
    wait_for(&addr, "/readyz", Duration::from_secs(60), |_, b| {
        b.contains("\"model_warm\":true")
    });
    // Longer than JetStream setup used to wait before giving up (two 5 s request timeouts).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(w.is_running(), "still waiting for NATS");
    assert_eq!(get(&addr, "/readyz").0, 503, "not ready without NATS");
    // One line per attempt, with a growing wait in between: no flood.
    let attempts = w.log_count("NATS not reachable yet");
    assert!(
        (3..=12).contains(&attempts),
        "{attempts} attempts logged in 12 s"
    );

    nats.restart(Duration::ZERO);
    w.wait_for_log("clip-worker ready", Duration::from_secs(30));
    wait_for(&addr, "/readyz", Duration::from_secs(10), |s, _| s == 200);
    let client = connect(&nats.url).await;
    let (reply, _) = call(&client, "clip.encode", &request(vec![text("hello")])).await;
    assert!(reply.docs[0].embedding.is_some());
    let js = jetstream::new(client.clone());
    results_stream(&js).await;
    let job = request(vec![image(png(7, 32, 32))]);
    submit(&js, "encode", "late-1", "results.late-1", &job).await;
    let results = read_results(&js, 1, Duration::from_secs(30)).await;
    assert!(results["late-1"].1.docs[0].embedding.is_some());
}

/// A short version of `scripts/chaos.sh`: jobs with about 5 % poison, a worker SIGKILLed and
/// replaced, a NATS restart; every job answered once and nothing left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_smoke_a_kill_and_a_nats_restart_lose_and_duplicate_nothing() {
    let mut nats = NatsServer::start();
    let args = ["--mode", "jobs", "--ack-wait", "2s", "--nak-delay", "200ms"];
    let mut workers = vec![
        Worker::start(&nats.url, &args),
        Worker::start(&nats.url, &args),
    ];
    let client = connect(&nats.url).await;
    let js = jetstream::new(client.clone());
    results_stream(&js).await;

    let total = 300;
    let poison = |i: usize| i % 20 == 7;
    let mut killed = false;
    for i in 0..total {
        let id = format!("smoke-{i}");
        let payload = if poison(i) {
            b"\xc1 not msgpack".to_vec()
        } else if i % 2 == 0 {
            protocol::encode(&request(vec![text(&format!("job {i}")), text("a photo")])).unwrap()
        } else {
            protocol::encode(&request(vec![image(png(i as u8, 24, 24))])).unwrap()
        };
        submit_raw(&js, "encode", &id, &format!("results.{id}"), payload).await;
        if i == total / 3 {
            // Some jobs of the first worker are in flight or unacknowledged when it dies.
            workers[0].wait_for_log("job received", Duration::from_secs(30));
            workers[0].signal("KILL");
            assert_eq!(workers[0].wait_exit(Duration::from_secs(10)), None);
            killed = true;
            workers[0] = Worker::start(&nats.url, &args);
        }
        if i == 2 * total / 3 {
            nats.restart(Duration::from_millis(300));
        }
    }
    assert!(killed);

    let results = read_results(&js, total, Duration::from_secs(90)).await;
    let missing: Vec<usize> = (0..total)
        .filter(|i| !results.contains_key(&format!("smoke-{i}")))
        .collect();
    assert!(missing.is_empty(), "jobs without a result: {missing:?}");
    for (i, (copies, resp)) in (0..total).map(|i| (i, &results[&format!("smoke-{i}")])) {
        assert_eq!(*copies, 1, "job {i}: one result");
        if poison(i) {
            assert_eq!(
                resp.error.as_ref().map(|e| e.code),
                Some(ErrorCode::BadRequest),
                "poison job {i}"
            );
        } else {
            assert!(resp.error.is_none(), "job {i}: {:?}", resp.error);
            assert!(resp.docs.iter().all(|d| d.embedding.is_some()), "job {i}");
        }
    }
    // Every job acknowledged or terminated: nothing waits in the stream or on the consumer.
    let mut left = (u64::MAX, usize::MAX, 0);
    for _ in 0..50 {
        let mut stream = js.get_stream("CLIP_JOBS").await.unwrap();
        let messages = stream.info().await.unwrap().state.messages;
        let mut consumer: consumer::PullConsumer =
            stream.get_consumer("clip-workers").await.unwrap();
        let info = consumer.info().await.unwrap();
        left = (messages, info.num_ack_pending, info.num_pending);
        if left == (0, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, (0, 0, 0), "(stream messages, ack pending, pending)");
    for w in &mut workers {
        assert!(w.is_running(), "no worker died on its own");
    }
}
