//! One verified, resumable HTTP download: `<target>.part` grows (resumed with a `Range` request
//! after a dropped connection), is checked against its md5, and only then renamed to `<target>`.
//! Transient failures (network, 5xx, short bodies, md5 mismatches) are retried with exponential
//! backoff; others (404, a full disk) fail at once.

use super::cache::md5_file;
use super::progress::Progress;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Retry and timeout settings.
#[derive(Debug, Clone)]
pub(crate) struct DownloadOptions {
    /// Tries per file, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubled each time, capped at `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a body (not a limit on the whole download).
    pub read_timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("GET {url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("GET {url}: {message}")]
    Transport { url: String, message: String },
    #[error("GET {url}: connection lost after {received} bytes of `{}`: {source}", .file.display())]
    Body {
        url: String,
        file: PathBuf,
        received: u64,
        #[source]
        source: io::Error,
    },
    #[error("GET {url}: body of `{}` ended at {got} of {expected} bytes", .file.display())]
    Incomplete {
        url: String,
        file: PathBuf,
        got: u64,
        expected: u64,
    },
    #[error("GET {url}: md5 mismatch for `{}`: expected {expected}, got {actual}", .file.display())]
    Md5Mismatch {
        url: String,
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("writing `{}`: {source}", .file.display())]
    Disk {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("gave up on {url} after {attempts} attempts; last error: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        #[source]
        last: Box<DownloadError>,
    },
}

impl DownloadError {
    /// Whether another try may succeed.
    fn is_transient(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            DownloadError::Transport { .. }
            | DownloadError::Body { .. }
            | DownloadError::Incomplete { .. }
            | DownloadError::Md5Mismatch { .. } => true,
            DownloadError::Disk { .. } | DownloadError::GaveUp { .. } => false,
        }
    }
}

pub(crate) struct Downloader {
    agent: ureq::Agent,
    options: DownloadOptions,
}

impl Downloader {
    pub(crate) fn new(options: DownloadOptions) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(options.connect_timeout)
            .timeout_read(options.read_timeout)
            .user_agent(concat!("clip-worker/", env!("CARGO_PKG_VERSION")))
            .build();
        Downloader { agent, options }
    }

    /// Downloads `url` to `target` (through `<target>.part`), checking `md5` when given.
    pub(crate) fn fetch(
        &self,
        url: &str,
        target: &Path,
        md5: Option<&str>,
        label: &str,
    ) -> Result<(), DownloadError> {
        let part = part_path(target);
        let attempts = self.options.attempts.max(1);
        let mut delay = self.options.backoff;
        for attempt in 1..=attempts {
            let error = match self.try_once(url, &part, label) {
                Ok(()) => match check_and_install(url, &part, target, md5) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !error.is_transient() {
                return Err(error);
            }
            if attempt == attempts {
                return Err(DownloadError::GaveUp {
                    url: url.to_string(),
                    attempts,
                    last: Box::new(error),
                });
            }
            tracing::warn!(
                "download attempt {attempt} of {attempts} failed: {error}; retrying in {delay:?}"
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(self.options.max_backoff);
        }
        unreachable_attempts(url)
    }

    /// One request: resumes `part` if it has bytes, else starts it.
    fn try_once(&self, url: &str, part: &Path, label: &str) -> Result<(), DownloadError> {
        let disk = |source| DownloadError::Disk {
            file: part.to_path_buf(),
            source,
        };
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        // Identity encoding: byte offsets and Content-Length must be those of the file itself.
        let mut request = self.agent.get(url).set("Accept-Encoding", "identity");
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if have > 0 => {
                // The partial file is not a prefix the server can continue: start over.
                std::fs::remove_file(part).map_err(disk)?;
                return self.try_once(url, part, label);
            }
            Err(ureq::Error::Status(status, _)) => {
                return Err(DownloadError::Status {
                    url: url.to_string(),
                    status,
                    hint: match status {
                        403 | 404 => " (is the model name or --model-url-base right?)",
                        _ => "",
                    },
                })
            }
            Err(e) => {
                return Err(DownloadError::Transport {
                    url: url.to_string(),
                    message: e.to_string(),
                })
            }
        };
        let resumed = response.status() == 206
            && response
                .header("Content-Range")
                .is_some_and(|r| r.starts_with(&format!("bytes {have}-")));
        let start = if resumed { have } else { 0 };
        let length = response
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut file = if resumed {
            File::options().append(true).open(part)
        } else {
            File::create(part)
        }
        .map_err(disk)?;
        let mut progress = Progress::start(label, length.map(|l| l + start), start);
        let mut body = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut received = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    file.flush().map_err(disk)?;
                    return Err(DownloadError::Body {
                        url: url.to_string(),
                        file: part.to_path_buf(),
                        received,
                        source,
                    });
                }
            };
            file.write_all(&buf[..n]).map_err(disk)?;
            received += n as u64;
            progress.advance(n as u64);
        }
        file.sync_all().map_err(disk)?;
        progress.finish();
        match length {
            Some(expected) if received != expected => Err(DownloadError::Incomplete {
                url: url.to_string(),
                file: part.to_path_buf(),
                got: received,
                expected,
            }),
            _ => Ok(()),
        }
    }
}

/// Checks the finished `.part` and renames it into place; a mismatch deletes it.
fn check_and_install(
    url: &str,
    part: &Path,
    target: &Path,
    md5: Option<&str>,
) -> Result<(), DownloadError> {
    let disk = |source| DownloadError::Disk {
        file: part.to_path_buf(),
        source,
    };
    if let Some(expected) = md5 {
        let actual = md5_file(part).map_err(disk)?;
        if !actual.eq_ignore_ascii_case(expected) {
            std::fs::remove_file(part).map_err(disk)?;
            return Err(DownloadError::Md5Mismatch {
                url: url.to_string(),
                file: target.to_path_buf(),
                expected: expected.to_string(),
                actual,
            });
        }
    }
    std::fs::rename(part, target).map_err(disk)
}

/// The loop above always returns; this keeps the signature honest without a panic.
fn unreachable_attempts(url: &str) -> Result<(), DownloadError> {
    Err(DownloadError::Transport {
        url: url.to_string(),
        message: "no download attempt was made".into(),
    })
}

/// `<target>.part`, next to the target, as the original names it.
pub(crate) fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    target.with_file_name(name)
}
