//! Loading the bytes a URI names: `data:` URIs, http(s) URLs and (when allowed) local files.

use crate::error::{DocError, ErrorCode};
use base64::Engine as _;
use std::io::Read;
use std::time::Duration;

/// What URIs may be fetched, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Read local paths (and `file://`). On for the CLI; off by default for the service, where a
    /// remote caller must not read the worker's disk.
    pub allow_local_files: bool,
    /// Fetch `http://` and `https://` URLs.
    pub allow_http: bool,
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Whole-request timeout for remote fetches.
    pub timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_local_files: true,
            allow_http: true,
            max_bytes: crate::defaults::MAX_DOC_BYTES as u64,
            timeout: crate::defaults::FETCH_TIMEOUT,
        }
    }
}

impl FetchPolicy {
    /// Returns the bytes behind `uri`.
    pub fn fetch(&self, uri: &str) -> Result<Vec<u8>, DocError> {
        if let Some(rest) = uri.strip_prefix("data:") {
            return self.limit(decode_data_uri(rest)?);
        }
        let lower = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return self.fetch_http(uri);
        }
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        if !self.allow_local_files {
            return Err(DocError::new(
                ErrorCode::InvalidDocument,
                format!(
                    "`{uri}` is not a data: or http(s) URI, and reading local files is disabled"
                ),
            ));
        }
        let meta = std::fs::metadata(path).map_err(|_| {
            DocError::new(
                ErrorCode::NotFound,
                format!("`{uri}` is not a URL or a valid local path"),
            )
        })?;
        if !meta.is_file() {
            return Err(DocError::new(
                ErrorCode::NotFound,
                format!("`{uri}` is not a regular file"),
            ));
        }
        if meta.len() > self.max_bytes {
            return Err(too_large(meta.len(), self.max_bytes));
        }
        std::fs::read(path)
            .map_err(|e| DocError::new(ErrorCode::NotFound, format!("cannot read `{uri}`: {e}")))
    }

    fn fetch_http(&self, url: &str) -> Result<Vec<u8>, DocError> {
        if !self.allow_http {
            return Err(DocError::new(
                ErrorCode::InvalidDocument,
                format!("fetching `{url}` is disabled (http URIs are not allowed)"),
            ));
        }
        let agent = ureq::AgentBuilder::new().timeout(self.timeout).build();
        let resp = agent
            .get(url)
            .set("User-Agent", "Mozilla/5.0")
            .call()
            .map_err(|e| DocError::new(ErrorCode::Fetch, format!("cannot fetch `{url}`: {e}")))?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(self.max_bytes + 1)
            .read_to_end(&mut body)
            .map_err(|e| DocError::new(ErrorCode::Fetch, format!("cannot read `{url}`: {e}")))?;
        self.limit(body)
    }

    fn limit(&self, bytes: Vec<u8>) -> Result<Vec<u8>, DocError> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(too_large(bytes.len() as u64, self.max_bytes));
        }
        Ok(bytes)
    }
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
    }

    #[test]
    fn local_files_obey_the_policy_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bin");
        std::fs::write(&f, [7u8; 10]).unwrap();
        let uri = f.to_str().unwrap();
        let mut p = FetchPolicy::default();
        assert_eq!(p.fetch(uri).unwrap(), vec![7u8; 10]);
        assert_eq!(
            p.fetch(&format!("{uri}.missing")).unwrap_err().code,
            ErrorCode::NotFound
        );
        p.max_bytes = 5;
        assert_eq!(p.fetch(uri).unwrap_err().code, ErrorCode::TooLarge);
        p.allow_local_files = false;
        assert_eq!(p.fetch(uri).unwrap_err().code, ErrorCode::InvalidDocument);
    }
}
