//! Connecting to NATS: server list, credentials, TLS; reconnects forever, but a server that
//! refuses this client at start-up (see [`refusal`]) is an error, not a retry loop.

use super::refusal::{refusal, Refusal};
use crate::defaults;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach and authenticate to NATS (the command line fills it from `--nats-*`).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs; the client picks one and fails over to the others.
    pub urls: Vec<String>,
    /// Credentials file (JWT + NKey seed), as `nsc` writes it.
    pub creds: Option<PathBuf>,
    /// File holding an NKey seed.
    pub nkey: Option<PathBuf>,
    pub token: Option<String>,
    pub user_password: Option<(String, String)>,
    /// CA certificate (PEM) to verify the server; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Require TLS even without a CA file.
    pub tls: bool,
    /// Connection name shown in the server's monitoring.
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("NATS credentials {}", path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS at {urls} refused this client: {refusal}")]
    Refused {
        urls: String,
        refusal: Refusal,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("connecting to NATS at {urls}")]
    Connect {
        urls: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

impl NatsOptions {
    /// One server, no credentials.
    pub fn for_url(url: impl Into<String>) -> Self {
        NatsOptions {
            urls: vec![url.into()],
            creds: None,
            nkey: None,
            token: None,
            user_password: None,
            tls_ca: None,
            tls_client: None,
            tls: false,
            name: defaults::NATS_NAME.into(),
        }
    }

    /// Connects, reconnecting without limit afterwards. A server that answers but refuses the
    /// credentials or the TLS handshake fails here; one that cannot be reached yet is retried in
    /// the background (the client is returned at once, not connected).
    pub(crate) async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        let urls = || self.urls.join(",");
        let first = match self
            .connect_options()
            .await?
            .connect(self.urls.clone())
            .await
        {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        if let Some(refusal) = refusal(&first) {
            return Err(ConnectError::Refused {
                urls: urls(),
                refusal,
                source: first,
            });
        }
        tracing::warn!("NATS at {} not reachable yet ({first}); retrying", urls());
        self.connect_options()
            .await?
            .retry_on_initial_connect()
            .connect(self.urls.clone())
            .await
            .map_err(|source| ConnectError::Connect {
                urls: urls(),
                source,
            })
    }

    /// Connection settings and credentials, read afresh from their files.
    async fn connect_options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(&self.name)
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    async_nats::Event::ClientError(e) => tracing::warn!("NATS: {e}"),
                    other => tracing::info!("NATS event: {other}"),
                }
            });
        let unreadable = |path: &PathBuf| {
            let path = path.clone();
            move |source| ConnectError::Credentials { path, source }
        };
        if let Some(path) = &self.creds {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(unreadable(path))?;
        }
        if let Some(path) = &self.nkey {
            let seed = std::fs::read_to_string(path).map_err(unreadable(path))?;
            opts = opts.nkey(seed.trim().to_string());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if let Some((user, password)) = &self.user_password {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls {
            opts = opts.require_tls(true);
        }
        Ok(opts)
    }
}

/// Token and password stay out of debug output (and so out of logs).
impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "<none>" };
        f.debug_struct("NatsOptions")
            .field("urls", &self.urls)
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("token", &hidden(self.token.is_some()))
            .field(
                "user_password",
                &self
                    .user_password
                    .as_ref()
                    .map(|(user, _)| (user, hidden(true))),
            )
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::NatsOptions;

    #[test]
    fn debug_output_hides_token_and_password() {
        let mut o = NatsOptions::for_url("nats://127.0.0.1:4222");
        o.token = Some("tok-s3cret".into());
        o.user_password = Some(("bob".into(), "pw-s3cret".into()));
        let shown = format!("{o:?}");
        assert!(
            shown.contains("bob") && shown.contains("<hidden>"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
