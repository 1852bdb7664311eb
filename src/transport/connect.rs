//! Connecting to NATS: server list, credentials, TLS; reconnects forever.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated.
    #[arg(
        long = "nats-url",
        env = "CLIP_WORKER_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// Credentials file (JWT + NKey seed), as `nsc` writes it.
    #[arg(long = "nats-creds", env = "CLIP_WORKER_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// File holding an NKey seed.
    #[arg(long = "nats-nkey", env = "CLIP_WORKER_NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// Authentication token.
    #[arg(
        long = "nats-token",
        env = "CLIP_WORKER_NATS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// User name (with --nats-password).
    #[arg(long = "nats-user", env = "CLIP_WORKER_NATS_USER")]
    pub user: Option<String>,
    /// Password (with --nats-user).
    #[arg(
        long = "nats-password",
        env = "CLIP_WORKER_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the server; implies TLS.
    #[arg(long = "nats-tls-ca", env = "CLIP_WORKER_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(long = "nats-tls-cert", env = "CLIP_WORKER_NATS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long = "nats-tls-key", env = "CLIP_WORKER_NATS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require TLS even without a CA file.
    #[arg(
        long = "nats-tls",
        env = "CLIP_WORKER_NATS_TLS",
        default_value_t = false
    )]
    pub tls: bool,
    /// Connection name shown in the server's monitoring.
    #[arg(
        long = "nats-name",
        env = "CLIP_WORKER_NATS_NAME",
        default_value = "clip-worker"
    )]
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("NATS credentials from `{}`", path.display())]
    Credentials {
        path: std::path::PathBuf,
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

impl NatsArgs {
    pub fn for_url(url: impl Into<String>) -> Self {
        NatsArgs {
            urls: vec![url.into()],
            creds: None,
            nkey: None,
            token: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls: false,
            name: "clip-worker".into(),
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
        if let Some(path) = &self.creds {
            opts =
                opts.credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::Credentials {
                        path: path.clone(),
                        source,
                    })?;
        }
        if let Some(path) = &self.nkey {
            let seed =
                std::fs::read_to_string(path).map_err(|source| ConnectError::Credentials {
                    path: path.clone(),
                    source,
                })?;
            opts = opts.nkey(seed.trim().to_string());
        }
        if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
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
