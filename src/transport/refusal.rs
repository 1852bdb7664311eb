//! Telling a server that refuses this client (a configuration error: retrying cannot fix it)
//! from a server that cannot be reached (worth retrying).

use async_nats::rustls;
use async_nats::{ConnectError, ConnectErrorKind};
use std::error::Error;
use std::fmt;

/// Why a server that answered would not let this client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server rejected the credentials, or the NKey seed could not sign its challenge.
    Credentials,
    /// The TLS set-up or handshake failed: unreadable CA or key file, untrusted server
    /// certificate, client certificate missing or not trusted, TLS on one side only.
    Tls,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Credentials => {
                "credentials rejected or unusable (check --nats-creds, --nats-nkey, \
                 --nats-token, --nats-user/--nats-password)"
            }
            Refusal::Tls => {
                "TLS failed (check --nats-tls-ca, --nats-tls-cert/--nats-tls-key and the \
                 server's TLS settings)"
            }
        })
    }
}

/// `Some` when the failure is a refusal; `None` when it is worth retrying (connection refused,
/// timed out, DNS, a server that went away).
pub(crate) fn refusal(error: &ConnectError) -> Option<Refusal> {
    match error.kind() {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            Some(Refusal::Credentials)
        }
        ConnectErrorKind::Tls => Some(Refusal::Tls),
        // A failed handshake reaches us as an I/O error wrapping rustls' reason; with TLS 1.3 so
        // does a client certificate the server refuses (its alert arrives on the first read).
        _ if carries_tls_error(error) => Some(Refusal::Tls),
        _ => None,
    }
}

fn carries_tls_error(error: &ConnectError) -> bool {
    let mut next = error.source();
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps: look inside it instead.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn io_error(kind: io::ErrorKind, inner: rustls::Error) -> ConnectError {
        ConnectError::with_source(ConnectErrorKind::Io, io::Error::new(kind, inner))
    }

    #[test]
    fn refused_credentials_and_tls_are_refusals() {
        for kind in [
            ConnectErrorKind::Authentication,
            ConnectErrorKind::AuthorizationViolation,
        ] {
            assert_eq!(
                refusal(&ConnectError::new(kind)),
                Some(Refusal::Credentials)
            );
        }
        assert_eq!(
            refusal(&ConnectError::new(ConnectErrorKind::Tls)),
            Some(Refusal::Tls)
        );
        let untrusted = io_error(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(refusal(&untrusted), Some(Refusal::Tls));
        let no_client_cert = io_error(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert_eq!(refusal(&no_client_cert), Some(Refusal::Tls));
    }

    #[test]
    fn an_unreachable_server_is_worth_retrying() {
        let refused = ConnectError::with_source(
            ConnectErrorKind::Io,
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(refusal(&refused), None);
        let reset = ConnectError::with_source(
            ConnectErrorKind::Io,
            io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer"),
        );
        assert_eq!(refusal(&reset), None);
        for kind in [
            ConnectErrorKind::TimedOut,
            ConnectErrorKind::Dns,
            ConnectErrorKind::Io,
        ] {
            assert_eq!(refusal(&ConnectError::new(kind)), None);
        }
    }
}
