#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A small HTTP/1.1 file server on 127.0.0.1 for download and fetch tests: serves byte ranges
//! (with a chosen content type), redirects, injects faults (an error status, a corrupted body, a
//! connection dropped mid-body) on chosen requests, can throttle bodies, and records every
//! request it answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do instead of a plain answer, once, for the next request of a path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and no body.
    Status(u16),
    /// Send the right length but with every byte inverted (an md5 mismatch).
    Corrupt,
    /// Announce the full length, send this many body bytes, then close the connection.
    DropAfter(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    /// Start offset of a `Range: bytes=N-` header.
    pub range_start: Option<u64>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    content_types: HashMap<String, String>,
    redirects: HashMap<String, String>,
    /// Paths served without `Content-Length` (the body ends when the connection closes).
    unannounced: HashSet<String>,
    faults: HashMap<String, VecDeque<Fault>>,
    requests: Vec<Request>,
    chunk_delay: Option<Duration>,
}

pub struct FileServer {
    pub base: String,
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = serve_one(conn, &s);
                    });
                }
            }
        });
        FileServer {
            base: format!("http://127.0.0.1:{port}/"),
            port,
            state,
            stop,
        }
    }

    /// Serves `bytes` at `/<path>`.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.trim_start_matches('/').to_string(), bytes);
    }

    /// Serves `bytes` at `/<path>` with this `Content-Type`.
    pub fn put_typed(&self, path: &str, bytes: Vec<u8>, content_type: &str) {
        self.put(path, bytes);
        self.state.lock().unwrap().content_types.insert(
            path.trim_start_matches('/').to_string(),
            content_type.into(),
        );
    }

    /// Serves `bytes` at `/<path>` without announcing their length.
    pub fn put_unannounced(&self, path: &str, bytes: Vec<u8>) {
        self.put(path, bytes);
        self.state
            .lock()
            .unwrap()
            .unannounced
            .insert(path.trim_start_matches('/').to_string());
    }

    /// Answers every request of `/<path>` with `302 Found` to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.state
            .lock()
            .unwrap()
            .redirects
            .insert(path.trim_start_matches('/').to_string(), location.into());
    }

    /// Queues a fault for the next request of `path` (faults apply in order, one per request).
    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(path.trim_start_matches('/').to_string())
            .or_default()
            .push_back(fault);
    }

    /// Sleeps this long between 16 KiB chunks of every body.
    pub fn throttle(&self, delay: Duration) {
        self.state.lock().unwrap().chunk_delay = Some(delay);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_one(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut range_start = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range_start = value
                    .trim()
                    .strip_prefix("bytes=")
                    .and_then(|v| v.trim_end_matches('-').parse::<u64>().ok());
            }
        }
    }
    let (file, fault, delay, content_type, redirect, unannounced) = {
        let mut s = state.lock().unwrap();
        let fault = s.faults.get_mut(&path).and_then(|q| q.pop_front());
        (
            s.files.get(&path).cloned(),
            fault,
            s.chunk_delay,
            s.content_types.get(&path).cloned(),
            s.redirects.get(&path).cloned(),
            s.unannounced.contains(&path),
        )
    };
    let mut conn = conn;
    let record = |status: u16| {
        state.lock().unwrap().requests.push(Request {
            path: path.clone(),
            range_start,
            status,
        })
    };
    if let Some(location) = redirect {
        record(302);
        write!(
            conn,
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        conn.flush()?;
        return conn.shutdown(Shutdown::Both);
    }
    let Some(file) = file else {
        record(404);
        return write_empty(&mut conn, 404);
    };
    if let Some(Fault::Status(code)) = fault {
        record(code);
        return write_empty(&mut conn, code);
    }
    let start = range_start.unwrap_or(0) as usize;
    if start >= file.len() && range_start.is_some() {
        record(416);
        return write_empty(&mut conn, 416);
    }
    let mut body = file[start..].to_vec();
    if matches!(fault, Some(Fault::Corrupt)) {
        body.iter_mut().for_each(|b| *b = !*b);
    }
    let (status, extra) = if range_start.is_some() {
        (
            206,
            format!(
                "Content-Range: bytes {start}-{}/{}\r\n",
                file.len() - 1,
                file.len()
            ),
        )
    } else {
        (200, String::new())
    };
    let extra = match content_type {
        Some(t) => format!("{extra}Content-Type: {t}\r\n"),
        None => extra,
    };
    record(status);
    let length = if unannounced {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(
        conn,
        "HTTP/1.1 {status} X\r\n{length}{extra}Accept-Ranges: bytes\r\nConnection: close\r\n\r\n"
    )?;
    let send = match fault {
        Some(Fault::DropAfter(n)) => &body[..n.min(body.len())],
        _ => &body[..],
    };
    for chunk in send.chunks(16 * 1024) {
        conn.write_all(chunk)?;
        if let Some(d) = delay {
            conn.flush()?;
            std::thread::sleep(d);
        }
    }
    conn.flush()?;
    conn.shutdown(Shutdown::Both)
}

fn write_empty(conn: &mut TcpStream, status: u16) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    conn.flush()?;
    conn.shutdown(Shutdown::Both)
}
