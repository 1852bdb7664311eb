//! HTTP probes of a worker's metrics listener: `/metrics`, `/healthz`, `/readyz`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::Worker;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The address the worker printed for its metrics listener.
pub fn metrics_addr(w: &Worker) -> String {
    w.wait_for_log("metrics on http://", Duration::from_secs(30));
    let log = w.log.lock().unwrap();
    let line = log
        .iter()
        .find(|l| l.contains("metrics on http://"))
        .unwrap();
    let rest = line.split("http://").nth(1).unwrap();
    rest.trim_end_matches("/metrics").trim().to_string()
}

/// A GET over a fresh connection: (status, body); status 0 when nothing answers.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    if s.read_to_string(&mut out).is_err() {
        return (0, String::new());
    }
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// Polls `path` until `want` says yes, returning that answer.
pub fn wait_for(
    addr: &str,
    path: &str,
    timeout: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> String {
    let start = Instant::now();
    let mut last = (0, String::new());
    while start.elapsed() < timeout {
        last = get(addr, path);
        if want(last.0, &last.1) {
            return last.1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{path} never matched; last answer {}: {}", last.0, last.1);
}
