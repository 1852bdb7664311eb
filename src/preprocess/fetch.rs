//! Loading the bytes a URI names: `data:` URIs, http(s) URLs and (when allowed) local files.
//!
//! The CLI reads any local file and any URL, as its user could. `serve` takes URIs from remote
//! callers: it refuses local paths outside `--allow-local-root` and addresses that are not
//! public (see [`address`]) unless opened up, and bounds every fetch in time and size.

pub(crate) mod address;
mod http;
mod local;
mod workers;

use crate::error::{DocError, ErrorCode};
use base64::Engine as _;
pub(crate) use http::NetworkPolicy;
pub(crate) use local::{LocalFiles, LocalRootError};
use std::time::Duration;
pub(crate) use workers::FetchWorkers;

/// What URIs may be fetched, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchConfig {
    /// Which local paths (and `file://` URIs) may be read.
    pub local_files: LocalFiles,
    /// Fetch `http://` and `https://` URLs.
    pub allow_http: bool,
    /// Which addresses http(s) fetches may connect to.
    pub network: NetworkPolicy,
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Time to establish one connection.
    pub connect_timeout: Duration,
    /// Time for a whole fetch: every redirect, and the body.
    pub timeout: Duration,
    /// Redirects followed (each one checked like the first URL).
    pub max_redirects: u32,
}

impl FetchConfig {
    /// The CLI's: local files and any address, as the machine's user could read them.
    pub(crate) fn cli() -> Self {
        FetchConfig {
            local_files: LocalFiles::Anywhere,
            allow_http: true,
            network: NetworkPolicy::any_address(),
            max_bytes: crate::defaults::MAX_DOC_BYTES as u64,
            connect_timeout: crate::defaults::FETCH_CONNECT_TIMEOUT,
            timeout: crate::defaults::FETCH_TIMEOUT,
            max_redirects: crate::defaults::MAX_REDIRECTS,
        }
    }

    /// The service's defaults: no local files, public addresses only.
    #[cfg(test)]
    pub(crate) fn service() -> Self {
        FetchConfig {
            local_files: LocalFiles::Refused,
            network: NetworkPolicy::public_only(),
            ..Self::cli()
        }
    }
}

/// A [`FetchConfig`] and the one HTTP client (with its connection pool) built for it; cheap to
/// clone, shared by every fetch.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    config: FetchConfig,
    agent: ureq::Agent,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy::new(FetchConfig::cli())
    }
}

impl FetchPolicy {
    pub(crate) fn new(config: FetchConfig) -> Self {
        FetchPolicy {
            agent: http::agent(&config),
            config,
        }
    }

    /// Returns the bytes behind `uri` (blocking: network and disk).
    pub(crate) fn fetch(&self, uri: &str) -> Result<Vec<u8>, DocError> {
        if let Some(rest) = uri.strip_prefix("data:") {
            return self.limit(decode_data_uri(rest)?);
        }
        if is_http(uri) {
            if !self.config.allow_http {
                return Err(refused(format!(
                    "`{uri}`: this worker fetches no http(s) URIs"
                )));
            }
            return http::fetch(&self.agent, &self.config, uri);
        }
        self.config.local_files.read(uri, self.config.max_bytes)
    }

    fn limit(&self, bytes: Vec<u8>) -> Result<Vec<u8>, DocError> {
        if bytes.len() as u64 > self.config.max_bytes {
            return Err(too_large(bytes.len() as u64, self.config.max_bytes));
        }
        Ok(bytes)
    }
}

/// Whether loading `uri` means I/O (network or disk) rather than decoding it in place.
pub(crate) fn needs_io(uri: &str) -> bool {
    !uri.starts_with("data:")
}

fn is_http(uri: &str) -> bool {
    let scheme = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
    scheme.starts_with("http://") || scheme.starts_with("https://")
}

fn refused(message: String) -> DocError {
    DocError::new(ErrorCode::UriRefused, message)
}

fn too_large(size: u64, max: u64) -> DocError {
    DocError::new(
        ErrorCode::TooLarge,
        format!("content of {size} bytes exceeds the limit of {max} bytes"),
    )
}

/// Decodes the part of a data URI after `data:` (RFC 2397: base64 or percent-encoded).
fn decode_data_uri(rest: &str) -> Result<Vec<u8>, DocError> {
    let (meta, payload) = rest.split_once(',').ok_or_else(|| {
        DocError::new(
            ErrorCode::InvalidDocument,
            "malformed data URI: no `,` separator",
        )
    })?;
    let raw = percent_encoding::percent_decode_str(payload).collect::<Vec<u8>>();
    if meta.to_ascii_lowercase().ends_with(";base64") {
        let cleaned: Vec<u8> = raw
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(&cleaned)
            .map_err(|e| {
                DocError::new(
                    ErrorCode::InvalidDocument,
                    format!("bad base64 in data URI: {e}"),
                )
            })
    } else {
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_uris_decode() {
        let p = FetchPolicy::default();
        assert_eq!(
            p.fetch("data:image/png;base64,AAEC").unwrap(),
            vec![0, 1, 2]
        );
        assert_eq!(p.fetch("data:,a%20b").unwrap(), b"a b".to_vec());
        assert_eq!(
            p.fetch("data:image/png;base64").unwrap_err().code,
            ErrorCode::InvalidDocument
        );
        assert_eq!(
            p.fetch("data:image/png;base64,@@@").unwrap_err().code,
            ErrorCode::InvalidDocument
        );
        let small = FetchPolicy::new(FetchConfig {
            max_bytes: 2,
            ..FetchConfig::service()
        });
        assert_eq!(
            small.fetch("data:,abc").unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn the_service_refuses_local_files_and_disabled_http() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bin");
        std::fs::write(&f, [7u8; 10]).unwrap();
        let uri = f.to_str().unwrap();
        assert_eq!(FetchPolicy::default().fetch(uri).unwrap(), vec![7u8; 10]);
        let service = FetchPolicy::new(FetchConfig::service());
        for uri in [uri.to_string(), format!("file://{uri}")] {
            let err = service.fetch(&uri).unwrap_err();
            assert_eq!(err.code, ErrorCode::UriRefused, "{err}");
        }
        let no_http = FetchPolicy::new(FetchConfig {
            allow_http: false,
            ..FetchConfig::service()
        });
        let err = no_http.fetch("HTTPS://example.com/a.png").unwrap_err();
        assert_eq!(err.code, ErrorCode::UriRefused);
        assert!(needs_io("https://example.com/a.png") && !needs_io("data:,x"));
    }
}
