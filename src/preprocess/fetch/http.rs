//! http(s) fetches under the network policy: every address checked after resolution, the
//! connection made to the checked address, redirects followed one by one and checked again.

use super::address::{self, Restricted};
use super::{refused, too_large, FetchConfig};
use crate::error::{DocError, ErrorCode};
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

/// Where http(s) URIs may lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetworkPolicy {
    /// Connect to any address (the CLI, where the caller is the machine's user).
    pub allow_any_address: bool,
    /// Loopback, private, link-local, unique-local and CGNAT addresses are allowed.
    pub allow_private_networks: bool,
    /// Host names (or IP literals) that may resolve to any address, lower case.
    pub allow_hosts: Vec<String>,
}

impl NetworkPolicy {
    /// Public addresses only, unless opened up.
    pub(crate) fn public_only() -> Self {
        NetworkPolicy {
            allow_any_address: false,
            allow_private_networks: false,
            allow_hosts: Vec::new(),
        }
    }

    /// No address checks.
    pub(crate) fn any_address() -> Self {
        NetworkPolicy {
            allow_any_address: true,
            ..Self::public_only()
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allow_any_address
            || self
                .allow_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Why `ip` may not be reached, or `None` when it may.
    fn refusal(&self, ip: std::net::IpAddr) -> Option<Restricted> {
        address::classify(ip).filter(|r| !(self.allow_private_networks && r.is_private_network()))
    }
}

/// A connection refused by the policy, carried through the HTTP client's resolver error.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` resolves to {ip}, {reason}")]
struct AddressRefused {
    host: String,
    ip: std::net::IpAddr,
    reason: Restricted,
}

/// Resolves like the system does, then keeps only the addresses the policy allows: the client
/// connects to what this returns, so there is no second lookup for DNS rebinding to exploit.
struct GuardedResolver(Arc<NetworkPolicy>);

impl ureq::Resolver for GuardedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        let host = netloc
            .rsplit_once(':')
            .map_or(netloc, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        if self.0.host_allowed(host) {
            return Ok(addrs);
        }
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.0.refusal(a.ip()) {
                None => true,
                Some(reason) => {
                    first_refusal.get_or_insert((a.ip(), reason));
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (true, Some((ip, reason))) => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                AddressRefused {
                    host: host.to_string(),
                    ip,
                    reason,
                },
            )),
            _ => Ok(allowed),
        }
    }
}

/// The one HTTP client of a fetch policy (connection pool included), shared by all fetches.
pub(super) fn agent(config: &FetchConfig) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .resolver(GuardedResolver(Arc::new(config.network.clone())))
        .timeout_connect(config.connect_timeout)
        .timeout(config.timeout)
        // Followed one at a time below, so that each hop is checked and counted.
        .redirects(0)
        .user_agent("Mozilla/5.0")
        .build()
}

/// GETs `url`, following at most `max_redirects` redirects, all within `config.timeout`.
pub(super) fn fetch(
    agent: &ureq::Agent,
    config: &FetchConfig,
    url: &str,
) -> Result<Vec<u8>, DocError> {
    let deadline = Instant::now() + config.timeout;
    let mut current = parse(url, url)?;
    let mut redirects = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(url, config));
        }
        let response = match agent.request_url("GET", &current).timeout(remaining).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status, _)) => {
                return Err(DocError::new(
                    ErrorCode::Fetch,
                    format!("`{url}` answered HTTP {status}"),
                ))
            }
            Err(ureq::Error::Transport(t)) => return Err(transport_error(url, &current, t)),
        };
        if !(300..400).contains(&response.status()) {
            return read_body(response, url, config);
        }
        let Some(location) = response.header("location") else {
            return Err(DocError::new(
                ErrorCode::Fetch,
                format!(
                    "`{url}` answered HTTP {} without a Location",
                    response.status()
                ),
            ));
        };
        redirects += 1;
        if redirects > config.max_redirects {
            return Err(DocError::new(
                ErrorCode::Fetch,
                format!("`{url}` redirects more than {} times", config.max_redirects),
            ));
        }
        current = match current.join(location) {
            Ok(next) => parse(next.as_str(), url)?,
            Err(e) => {
                return Err(DocError::new(
                    ErrorCode::Fetch,
                    format!("`{url}` redirects to an invalid location `{location}`: {e}"),
                ))
            }
        };
    }
}

/// An http(s) URL; any other scheme (a redirect to `file:` among them) is refused.
fn parse(url: &str, original: &str) -> Result<url::Url, DocError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        DocError::new(
            ErrorCode::InvalidDocument,
            format!("`{url}` is not a valid URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refused(format!(
            "`{original}` leads to `{url}`, which is not an http(s) URL"
        )));
    }
    Ok(parsed)
}

fn transport_error(url: &str, current: &url::Url, t: ureq::Transport) -> DocError {
    let host = current.host_str().unwrap_or_default();
    if let Some(refusal) = address_refusal(&t) {
        let via = if current.as_str() == url {
            String::new()
        } else {
            format!(" (redirected to `{current}`)")
        };
        return refused(format!("`{url}`{via}: {refusal}"));
    }
    if is_timeout(&t) {
        return DocError::new(
            ErrorCode::Fetch,
            format!("`{url}`: host `{host}` did not answer in time"),
        );
    }
    DocError::new(ErrorCode::Fetch, format!("cannot fetch `{url}`: {t}"))
}

fn address_refusal(t: &ureq::Transport) -> Option<&AddressRefused> {
    let io = std::error::Error::source(t)?.downcast_ref::<std::io::Error>()?;
    io.get_ref()?.downcast_ref::<AddressRefused>()
}

fn is_timeout(t: &ureq::Transport) -> bool {
    std::error::Error::source(t)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        })
}

fn timed_out(url: &str, config: &FetchConfig) -> DocError {
    DocError::new(
        ErrorCode::Fetch,
        format!("fetching `{url}` took longer than {:?}", config.timeout),
    )
}

/// The body, if its type may be an image and it fits `config.max_bytes`.
fn read_body(
    response: ureq::Response,
    url: &str,
    config: &FetchConfig,
) -> Result<Vec<u8>, DocError> {
    if let Some(kind) = response.header("content-type") {
        if !may_be_image(kind) {
            return Err(DocError::new(
                ErrorCode::InvalidDocument,
                format!("`{url}` answered with content type `{kind}`, not an image"),
            ));
        }
    }
    let announced = response
        .header("content-length")
        .and_then(|n| n.trim().parse::<u64>().ok());
    if let Some(n) = announced.filter(|n| *n > config.max_bytes) {
        return Err(too_large(n, config.max_bytes));
    }
    let mut body = Vec::new();
    response
        .into_reader()
        .take(config.max_bytes + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            let reason = if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                "the body did not arrive in time".to_string()
            } else {
                e.to_string()
            };
            DocError::new(ErrorCode::Fetch, format!("cannot read `{url}`: {reason}"))
        })?;
    if body.len() as u64 > config.max_bytes {
        return Err(too_large(body.len() as u64, config.max_bytes));
    }
    Ok(body)
}

/// Content types that are certainly not an image (an error page, an API answer) are refused
/// with a clear message; anything else (image/*, application/octet-stream, a missing or an odd
/// type) goes to the decoder, which recognises images by their bytes.
fn may_be_image(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("image/") {
        return true;
    }
    let textual = media.starts_with("text/")
        || media.ends_with("/json")
        || media.ends_with("+json")
        || media.ends_with("/xml")
        || media.ends_with("+xml")
        || matches!(
            media.as_str(),
            "application/javascript"
                | "application/ecmascript"
                | "application/x-www-form-urlencoded"
        );
    !textual
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ok in [
            "image/png",
            "IMAGE/JPEG; charset=binary",
            "application/octet-stream",
            "binary/octet-stream",
            "image/svg+xml",
            "",
        ] {
            assert!(may_be_image(ok), "{ok}");
        }
        for bad in [
            "text/html; charset=utf-8",
            "text/plain",
            "application/json",
            "application/problem+json",
            "application/xml",
            "application/xhtml+xml",
            "application/javascript",
        ] {
            assert!(!may_be_image(bad), "{bad}");
        }
    }

    #[test]
    fn the_resolver_keeps_only_allowed_addresses() {
        let resolve = |policy: NetworkPolicy, netloc: &str| {
            ureq::Resolver::resolve(&GuardedResolver(Arc::new(policy)), netloc)
        };
        let err = resolve(NetworkPolicy::public_only(), "127.0.0.1:80").unwrap_err();
        let refusal = err.get_ref().unwrap().to_string();
        assert_eq!(
            refusal,
            "`127.0.0.1` resolves to 127.0.0.1, a loopback address"
        );
        let err = resolve(NetworkPolicy::public_only(), "[::ffff:169.254.169.254]:80").unwrap_err();
        assert!(err.to_string().contains("cloud metadata"), "{err}");
        assert!(resolve(NetworkPolicy::public_only(), "8.8.8.8:443").is_ok());

        let private = NetworkPolicy {
            allow_private_networks: true,
            ..NetworkPolicy::public_only()
        };
        assert!(resolve(private.clone(), "127.0.0.1:80").is_ok());
        assert!(resolve(private.clone(), "[::1]:80").is_ok());
        assert!(resolve(private, "169.254.169.254:80").is_err());

        let hosts = NetworkPolicy {
            allow_hosts: vec!["127.0.0.1".into(), "::1".into()],
            ..NetworkPolicy::public_only()
        };
        assert!(resolve(hosts.clone(), "127.0.0.1:80").is_ok());
        assert!(resolve(hosts.clone(), "[::1]:80").is_ok());
        assert!(resolve(hosts, "127.0.0.2:80").is_err());
        assert!(resolve(NetworkPolicy::any_address(), "0.0.0.0:80").is_ok());
    }
}
