//! The Python example client (`examples/python/client.py`, nats-py + msgpack from the project's
//! `.venv`) against a real nats-server and worker: encode, rank and a durable job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::png;
use common::{repo_root, NatsServer, Worker};
use serde_json::Value;
use std::process::Command;

#[test]
fn python_example_client_encodes_ranks_and_runs_a_durable_job() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/bootstrap.sh",
        python.display()
    );
    let nats = NatsServer::start();
    let _worker = Worker::start(&nats.url, &[]);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("cat.png");
    std::fs::write(&image, png(7, 64, 64)).unwrap();

    let out = Command::new(&python)
        .arg(repo_root().join("examples/python/client.py"))
        .args(["--server", &nats.url, "--timeout", "30", "--image"])
        .arg(&image)
        .args(["a photo of a cat", "a photo of a dog"])
        .current_dir(repo_root())
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client.py failed (did scripts/bootstrap.sh install examples/python/requirements.txt?)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let steps: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(steps.len(), 3, "{stdout}");
    // Each call sent a W3C trace context and its reply continued the same trace.
    for step in &steps {
        let id = step["trace_id"].as_str().unwrap_or("");
        assert_eq!(id.len(), 32, "{step}");
        assert_eq!(step["trace_continued"], true, "{step}");
    }

    let encode = &steps[0];
    assert_eq!(encode["step"], "encode");
    assert_eq!(
        encode["ids"],
        serde_json::json!(["text-0", "text-1", "image"])
    );
    assert_eq!(
        encode["modalities"],
        serde_json::json!(["text", "text", "image"])
    );
    assert_eq!(encode["dims"], serde_json::json!([32, 32, 32]));

    let rank = &steps[1];
    assert_eq!(rank["step"], "rank");
    assert_eq!(rank["query"], "text-0");
    let ranked = rank["ranked"].as_array().unwrap();
    let mut ids: Vec<&str> = ranked.iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["image", "text-1"]);
    let scores: Vec<f64> = ranked
        .iter()
        .map(|m| m["clip_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(
        (scores.iter().sum::<f64>() - 1.0).abs() < 1e-6,
        "{scores:?}"
    );

    let job = &steps[2];
    assert_eq!(job["step"], "job");
    assert_eq!(job["stream"], "CLIP_JOBS");
    assert_eq!(job["protocol"], "1");
    assert_eq!(job["dims"], serde_json::json!([32, 32, 32]));
    assert_eq!(job["same_as_request_reply"], true);
}
