//! NATS authentication and TLS against a real `nats-server` configured by the test: every way
//! `serve` and `submit` authenticate (credentials file in operator mode, NKey, token,
//! user/password, TLS with a custom CA, mutual TLS), a wrong secret failing start-up with its
//! cause named, and secrets kept out of logs and `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/auth_material.rs"]
mod auth_material;
mod common;

use auth_material::{operator_mode, pki, seed_of};
use clip_worker::client::{Client, ClientError};
use clip_worker::transport::connect::{ConnectError, NatsOptions};
use clip_worker::transport::refusal::Refusal;
use common::{clip_worker, free_port, NatsServer, Worker};
use std::process::{Command, Output};
use std::time::Duration;

/// A configured server, the flags that get in, the flags that must be refused, and the secrets
/// that must never be printed.
struct Setup {
    nats: NatsServer,
    good: Vec<String>,
    bad: Vec<String>,
    /// What the refusal says (the start of [`Refusal`]'s text).
    refused_because: &'static str,
    secrets: Vec<String>,
    _files: tempfile::TempDir,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

const CREDENTIALS_REFUSED: &str = "credentials rejected or unusable";
const TLS_REFUSED: &str = "TLS failed";

fn submit(url: &str, flags: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .args(["submit", "encode", "a photo of a cat", "--timeout", "30s"])
        .args(["--nats-url", url])
        .args(flags)
        .env("CLIP_WORKER_LOG", "debug")
        .output()
        .expect("run clip-worker submit")
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} shows a secret ({secret}):\n{text}"
        );
    }
}

/// The worker and the client get in with the good flags and are refused, quickly and with the
/// cause named, with the bad ones; nothing they print shows a secret.
fn check(setup: Setup, mode: &str) {
    let url = setup.nats.url.clone();
    let with = |flags: &[String]| {
        let mut args = strings(&["--mode", mode]);
        args.extend_from_slice(flags);
        args
    };
    let debug = [("CLIP_WORKER_LOG", "debug")];

    let worker_args = with(&setup.good);
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    let mut worker = Worker::start_with_env(&url, &worker_args, &debug);
    let out = submit(&url, &setup.good);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "submit failed:\n{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert!(line["embedding"].as_array().is_some_and(|e| !e.is_empty()));
    assert_no_secret(
        "submit's output",
        &format!("{stdout}{stderr}"),
        &setup.secrets,
    );
    worker.kill();
    let log = worker.log.lock().unwrap().join("\n");
    assert!(log.contains("connected to NATS"), "{log}");
    assert_no_secret("the worker's log", &log, &setup.secrets);

    let bad_args = with(&setup.bad);
    let bad_args: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let mut refused = Worker::spawn(&url, &bad_args, &debug);
    // A retry loop would never get here: the worker must stop by itself.
    refused.wait_for_log("refused this client", Duration::from_secs(60));
    assert_eq!(refused.wait_exit(Duration::from_secs(30)), Some(1));
    let log = refused.log.lock().unwrap().join("\n");
    assert!(log.contains(setup.refused_because), "{log}");
    assert_no_secret("the refused worker's log", &log, &setup.secrets);

    let out = submit(&url, &setup.bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused this client") && stderr.contains(setup.refused_because),
        "{stderr}"
    );
    assert_no_secret("the refused submit's output", &stderr, &setup.secrets);
}

#[test]
fn token() {
    let (token, wrong) = ("tok-5f0c2a9e", "tok-wrong-77d1");
    let setup = Setup {
        nats: NatsServer::start_with_config(&format!("authorization {{ token: \"{token}\" }}")),
        good: strings(&["--nats-token", token]),
        bad: strings(&["--nats-token", wrong]),
        refused_because: CREDENTIALS_REFUSED,
        secrets: strings(&[token, wrong]),
        _files: tempfile::tempdir().unwrap(),
    };
    check(setup, "service");
}

#[test]
fn user_and_password() {
    let (password, wrong) = ("pw-91bd33c0", "pw-wrong-0a4e");
    let config =
        format!("authorization {{ users: [ {{ user: \"clip\", password: \"{password}\" }} ] }}");
    let setup = Setup {
        nats: NatsServer::start_with_config(&config),
        good: strings(&["--nats-user", "clip", "--nats-password", password]),
        bad: strings(&["--nats-user", "clip", "--nats-password", wrong]),
        refused_because: CREDENTIALS_REFUSED,
        secrets: strings(&[password, wrong]),
        _files: tempfile::tempdir().unwrap(),
    };
    check(setup, "service");
}

#[test]
fn nkey() {
    let files = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let (seed, other_seed) = (seed_of(&user), seed_of(&stranger));
    let seed_file = files.path().join("user.nk");
    let other_file = files.path().join("stranger.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    std::fs::write(&other_file, &other_seed).unwrap();
    let config = format!(
        "authorization {{ users: [ {{ nkey: \"{}\" }} ] }}",
        user.public_key()
    );
    let setup = Setup {
        nats: NatsServer::start_with_config(&config),
        good: vec!["--nats-nkey".into(), path_str(&seed_file)],
        bad: vec!["--nats-nkey".into(), path_str(&other_file)],
        refused_because: CREDENTIALS_REFUSED,
        secrets: vec![seed, other_seed],
        _files: files,
    };
    check(setup, "service");
}

/// Operator mode: operator, account and user JWTs, a system account, the accounts preloaded in
/// a memory resolver. The worker runs both modes here (the account has JetStream).
#[test]
fn credentials_file_in_operator_mode() {
    let files = tempfile::tempdir().unwrap();
    let op = operator_mode(files.path());
    let setup = Setup {
        nats: NatsServer::start_with_config(&op.config),
        good: vec!["--nats-creds".into(), path_str(&op.creds)],
        bad: vec!["--nats-creds".into(), path_str(&op.creds_wrong_seed)],
        refused_because: CREDENTIALS_REFUSED,
        secrets: vec![op.user_seed],
        _files: files,
    };
    check(setup, "both");
}

#[test]
fn tls_with_a_custom_ca() {
    let files = tempfile::tempdir().unwrap();
    let pki = pki(files.path());
    let setup = Setup {
        nats: NatsServer::start_with_config(&pki.server_tls(false)),
        good: vec!["--nats-tls-ca".into(), path_str(&pki.ca)],
        // A CA that did not sign the server's certificate.
        bad: vec!["--nats-tls-ca".into(), path_str(&pki.other_ca)],
        refused_because: TLS_REFUSED,
        secrets: vec![],
        _files: files,
    };
    check(setup, "service");
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let files = tempfile::tempdir().unwrap();
    let pki = pki(files.path());
    let ca = path_str(&pki.ca);
    let key_body = key_lines(&pki.client_key_pem);
    let setup = Setup {
        nats: NatsServer::start_with_config(&pki.server_tls(true)),
        good: vec![
            "--nats-tls-ca".into(),
            ca.clone(),
            "--nats-tls-cert".into(),
            path_str(&pki.client_cert),
            "--nats-tls-key".into(),
            path_str(&pki.client_key),
        ],
        // The server asks for a client certificate and gets none.
        bad: vec!["--nats-tls-ca".into(), ca],
        refused_because: TLS_REFUSED,
        secrets: key_body,
        _files: files,
    };
    check(setup, "service");
}

/// The base64 lines of a PEM key (its secret part).
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// The library reports a refusal as one, typed; an unreachable server is not one (the client
/// keeps retrying until its wait runs out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_tells_a_refusal_from_an_unreachable_server() {
    let nats = NatsServer::start_with_config("authorization { token: \"tok-3c1e\" }");
    let mut opts = NatsOptions::for_url(&nats.url);
    opts.token = Some("tok-wrong".into());
    match Client::connect(&opts, "clip").await {
        Err(ClientError::Connect(ConnectError::Refused { refusal, .. })) => {
            assert_eq!(refusal, Refusal::Credentials)
        }
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    let nobody = NatsOptions::for_url(format!("nats://127.0.0.1:{}", free_port()));
    match Client::connect_within(&nobody, "clip", Duration::from_millis(500)).await {
        Err(ClientError::NotConnected { .. }) => {}
        other => panic!(
            "expected a retry until the wait ran out, got {:?}",
            other.err()
        ),
    }
}

/// `--help` with every NATS environment twin set shows none of the secret values (nor, for the
/// file flags, anything but the paths).
#[test]
fn help_does_not_show_secret_values() {
    let files = tempfile::tempdir().unwrap();
    let seed = seed_of(&nkeys::KeyPair::new_user());
    let seed_file = files.path().join("user.nk");
    std::fs::write(&seed_file, &seed).unwrap();
    let (token, password) = ("tok-help-4b7e", "pw-help-e21f");
    for command in [&["serve", "--help"][..], &["submit", "encode", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
            .args(command)
            .env("CLIP_WORKER_NATS_TOKEN", token)
            .env("CLIP_WORKER_NATS_USER", "clip")
            .env("CLIP_WORKER_NATS_PASSWORD", password)
            .env("CLIP_WORKER_NATS_NKEY", &seed_file)
            .output()
            .expect("run clip-worker --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command:?}");
        assert!(
            help.contains("CLIP_WORKER_NATS_TOKEN") && help.contains("CLIP_WORKER_NATS_PASSWORD"),
            "{help}"
        );
        assert_no_secret(
            "--help",
            &help,
            &[token.into(), password.into(), seed.clone()],
        );
    }
    // A flag error names the flags, not the values given to the others.
    let (code, _, err) = clip_worker(&[
        "submit",
        "encode",
        "hi",
        "--nats-token",
        token,
        "--nats-user",
        "clip",
        "--nats-password",
        password,
    ]);
    assert_eq!(code, 2, "{err}");
    assert_no_secret("a usage error", &err, &[password.into()]);
}
