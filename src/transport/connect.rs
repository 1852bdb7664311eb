//! Connecting to NATS: server list, credentials, TLS; reconnects forever.

use crate::defaults;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach and authenticate to NATS (the command line fills it from `--nats-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Connects, retrying the first connection too, and reconnecting without limit afterwards.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(&self.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
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
        opts.connect(self.urls.clone())
            .await
            .map_err(|source| ConnectError::Connect {
                urls: self.urls.join(","),
                source,
            })
    }
}
