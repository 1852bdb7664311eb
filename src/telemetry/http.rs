//! The operator's HTTP listener: `GET /metrics`, `/healthz`, `/readyz`.
//!
//! A deliberately small HTTP/1.1 server (one request per connection, `Connection: close`): the
//! callers are Prometheus and the kubelet, which send a handful of simple GETs.

use super::health::{Health, ProbeReport};
use super::metrics::metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head accepted; anything longer is answered 431 and closed.
const MAX_HEAD: usize = 8 * 1024;
/// A client that does not send its request within this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("metrics listener on `{addr}`: {source}")]
pub struct ListenError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Where the listener goes: an address, or nowhere (`off` or empty).
pub(crate) fn listen_address(flag: &str) -> Option<&str> {
    match flag.trim() {
        "" | "off" | "none" | "disabled" => None,
        addr => Some(addr),
    }
}

/// Binds the listener now (so a bad address fails start-up) and serves it in the background.
pub(crate) async fn start(addr: &str, health: Arc<Health>) -> Result<SocketAddr, ListenError> {
    let err = |source| ListenError {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    tokio::spawn(accept_loop(listener, health));
    Ok(local)
}

async fn accept_loop(listener: TcpListener, health: Arc<Health>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, health.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, health: Arc<Health>) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        Ok(None) => {
            let _ = write(
                &mut stream,
                431,
                "text/plain",
                b"request head too large\n",
                true,
            )
            .await;
            return;
        }
        Err(_) => return,
    };
    let (status, content_type, body, head_only) = route(&head, &health);
    let _ = write(&mut stream, status, content_type, &body, !head_only).await;
}

/// Reads up to the blank line that ends the request head; `None` when it is too long.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

type Routed = (u16, &'static str, Vec<u8>, bool);

fn route(head: &str, health: &Health) -> Routed {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (405, "text/plain", b"only GET and HEAD\n".to_vec(), false);
    }
    let probe = |r: ProbeReport| -> Routed {
        let status = if r.ok { 200 } else { 503 };
        (status, "application/json", r.body.into_bytes(), head_only)
    };
    match path {
        "/metrics" => {
            metrics().ready.set(i64::from(health.readiness().ok));
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics().render(),
                head_only,
            )
        }
        "/healthz" => probe(health.liveness()),
        "/readyz" => probe(health.readiness()),
        _ => (
            404,
            "text/plain",
            b"not found: try /metrics, /healthz or /readyz\n".to_vec(),
            head_only,
        ),
    }
}

async fn write(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return (0, String::new());
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        if s.write_all(req.as_bytes()).await.is_err() {
            return (0, String::new());
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[tokio::test]
    async fn probes_and_metrics_over_real_http() {
        let health = Arc::new(Health::default());
        let addr = match start("127.0.0.1:0", health.clone()).await {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(get(addr, "/healthz").await.0, 503, "starting: not live yet");
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("\"model_warm\":false"), "{body}");

        health.set_pipeline_check(|| true);
        health.set_nats_check(|| true);
        health.set_subscribed();
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503, "not warm yet");
        health.set_model_warm();
        assert_eq!(get(addr, "/readyz?verbose=1").await.0, 200);
        let (status, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(text.contains("clip_worker_ready 1"), "{text}");
        health.set_draining();
        assert_eq!(get(addr, "/readyz").await.0, 503);
        assert!(get(addr, "/metrics")
            .await
            .1
            .contains("clip_worker_ready 0"));
        assert_eq!(get(addr, "/nope").await.0, 404);
    }

    #[test]
    fn the_listener_can_be_turned_off() {
        assert_eq!(listen_address("off"), None);
        assert_eq!(listen_address(""), None);
        assert_eq!(listen_address("0.0.0.0:9090"), Some("0.0.0.0:9090"));
    }
}
