//! `--nats-*` flags: parsed here, handed to the transport as [`NatsOptions`]. Flags that only
//! work together are refused alone instead of being ignored.

use crate::defaults;
use crate::transport::connect::NatsOptions;
use clap::Args;
use std::path::PathBuf;

/// `nats-auth`: one way to authenticate (the library would mix the signatures of two).
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated.
    #[arg(
        long = "nats-url",
        env = "CLIP_WORKER_NATS_URL",
        default_value = defaults::NATS_URL,
        value_delimiter = ','
    )]
    pub urls: Vec<String>,
    /// Credentials file (JWT + NKey seed), as `nsc` writes it.
    #[arg(
        long = "nats-creds",
        env = "CLIP_WORKER_NATS_CREDS",
        group = "nats-auth"
    )]
    pub creds: Option<PathBuf>,
    /// File holding an NKey seed.
    #[arg(long = "nats-nkey", env = "CLIP_WORKER_NATS_NKEY", group = "nats-auth")]
    pub nkey: Option<PathBuf>,
    /// Authentication token.
    #[arg(
        long = "nats-token",
        env = "CLIP_WORKER_NATS_TOKEN",
        hide_env_values = true,
        group = "nats-auth"
    )]
    pub token: Option<String>,
    /// User name (with --nats-password).
    #[arg(
        long = "nats-user",
        env = "CLIP_WORKER_NATS_USER",
        requires = "password",
        group = "nats-auth"
    )]
    pub user: Option<String>,
    /// Password (with --nats-user).
    #[arg(
        long = "nats-password",
        env = "CLIP_WORKER_NATS_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the server; implies TLS.
    #[arg(long = "nats-tls-ca", env = "CLIP_WORKER_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(
        long = "nats-tls-cert",
        env = "CLIP_WORKER_NATS_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS (with --nats-tls-cert).
    #[arg(
        long = "nats-tls-key",
        env = "CLIP_WORKER_NATS_TLS_KEY",
        requires = "tls_cert"
    )]
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
        default_value = defaults::NATS_NAME
    )]
    pub name: String,
}

impl NatsArgs {
    pub(crate) fn options(&self) -> NatsOptions {
        NatsOptions {
            urls: self.urls.clone(),
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            token: self.token.clone(),
            user_password: self.user.clone().zip(self.password.clone()),
            tls_ca: self.tls_ca.clone(),
            tls_client: self.tls_cert.clone().zip(self.tls_key.clone()),
            tls: self.tls,
            name: self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn nats_of(args: &[&str]) -> crate::transport::connect::NatsOptions {
        let cli =
            Cli::try_parse_from([&["clip-worker", "submit", "encode", "x"][..], args].concat())
                .unwrap();
        match cli.command {
            Command::Submit(s) => match s.job {
                crate::cli::submit::SubmitJob::Encode(e) => e.common.nats.options(),
                crate::cli::submit::SubmitJob::Rank(r) => r.common.nats.options(),
            },
            _ => unreachable!("parsed a submit command"),
        }
    }

    #[test]
    fn pairs_given_together_reach_the_transport() {
        let o = nats_of(&[
            "--nats-user",
            "u",
            "--nats-password",
            "p",
            "--nats-tls-cert",
            "c.pem",
            "--nats-tls-key",
            "k.pem",
            "--nats-url",
            "nats://a:1,nats://b:2",
        ]);
        assert_eq!(o.user_password, Some(("u".into(), "p".into())));
        assert_eq!(o.tls_client, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(o.urls, ["nats://a:1", "nats://b:2"]);
        let o = nats_of(&[]);
        assert_eq!(
            o,
            crate::transport::connect::NatsOptions::for_url(crate::defaults::NATS_URL)
        );
    }
}
