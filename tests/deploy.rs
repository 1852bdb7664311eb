//! The deployment files: the Helm chart, the local stack and the Dockerfiles, checked by
//! `deploy/validate.py` with real tools from PyPI (Helm's own engine, kubernetes-validate,
//! hadolint, the compose-spec schema), plus a worker answering the probes the chart renders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, repo_root, NatsServer, Worker};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/bootstrap.sh",
        python.display()
    );
    python
}

fn run_validate(args: &[&str]) -> Output {
    Command::new(venv_python())
        .arg(repo_root().join("deploy/validate.py"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_clip-worker"))
        .args(args)
        .output()
        .expect("run deploy/validate.py")
}

fn validate(check: &str) {
    let out = run_validate(&[check]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "deploy/validate.py {check} failed:\n{text}"
    );
}

#[test]
fn chart_renders_valid_manifests_with_probes_grace_and_keda_trigger_right() {
    validate("chart");
}

#[test]
fn chart_sets_only_environment_variables_the_binary_accepts() {
    validate("env");
}

#[test]
fn chart_takes_credentials_only_from_secrets() {
    validate("secrets");
}

#[test]
fn dockerfiles_pass_hadolint_and_run_as_non_root() {
    validate("dockerfiles");
}

#[test]
fn compose_stack_is_valid() {
    validate("compose");
}

/// HTTP/1.0 GET on 127.0.0.1; the status code, or None while nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// The probes of the rendered chart, asked of a real worker listening as the chart configures it
/// (same paths and port; loopback instead of every interface).
#[test]
fn a_worker_answers_the_probes_the_chart_renders() {
    let out = run_validate(&["--print-probes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chart_port = rendered["metrics_addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let probes = rendered["probes"].as_object().unwrap();
    assert_eq!(probes.len(), 3);

    let nats = NatsServer::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _worker = Worker::start(&nats.url, &["--metrics-addr", &addr]);
    for (name, probe) in probes {
        assert_eq!(
            probe["port"].as_u64(),
            Some(u64::from(chart_port)),
            "{name} is not on the metrics listener"
        );
        let path = probe["path"].as_str().unwrap();
        // Ready once the worker announced it, but leave time for the listener's state to follow.
        let start = Instant::now();
        let mut status = http_status(port, path);
        while status != Some(200) && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
            status = http_status(port, path);
        }
        assert_eq!(
            status,
            Some(200),
            "{name} GET {path} on the metrics listener"
        );
    }
    assert_eq!(
        http_status(port, "/no-such-probe").map(|s| s >= 400),
        Some(true)
    );
}
