//! `serve`'s URI policy flags: which URIs named by documents the worker loads, and how.

use super::duration::{format_duration, parse_duration};
use crate::defaults;
use crate::preprocess::fetch::{
    FetchConfig, FetchPolicy, FetchWorkers, LocalFiles, LocalRootError, NetworkPolicy,
};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct UriArgs {
    /// Let documents name local files (paths or file:// URIs) under this folder; none by default.
    #[arg(long, env = "CLIP_WORKER_ALLOW_LOCAL_ROOT", value_name = "DIR")]
    pub allow_local_root: Option<PathBuf>,
    /// Deprecated (use --allow-local-root, which wins): let documents name any file the worker can read.
    #[arg(long, env = "CLIP_WORKER_ALLOW_LOCAL_FILES", default_value_t = false)]
    pub allow_local_files: bool,
    /// Fetch http(s) URIs named by documents.
    #[arg(long, env = "CLIP_WORKER_ALLOW_HTTP", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_http: bool,
    /// Hosts whose URIs may resolve to any address, private and loopback included (comma list).
    #[arg(
        long,
        env = "CLIP_WORKER_ALLOW_URI_HOSTS",
        value_name = "HOST[,HOST...]",
        value_delimiter = ','
    )]
    pub allow_uri_hosts: Vec<String>,
    /// Let URIs reach loopback, private, link-local, unique-local and CGNAT addresses.
    #[arg(
        long,
        env = "CLIP_WORKER_ALLOW_PRIVATE_NETWORKS",
        default_value_t = false
    )]
    pub allow_private_networks: bool,
    /// Time limit for fetching one http(s) URI, redirects and body included.
    #[arg(long, env = "CLIP_WORKER_FETCH_TIMEOUT", default_value = format_duration(defaults::FETCH_TIMEOUT), value_parser = parse_duration)]
    pub fetch_timeout: Duration,
    /// Time limit for opening one connection of a fetch.
    #[arg(long, env = "CLIP_WORKER_FETCH_CONNECT_TIMEOUT", default_value = format_duration(defaults::FETCH_CONNECT_TIMEOUT), value_parser = parse_duration)]
    pub fetch_connect_timeout: Duration,
    /// Redirects one fetch follows (each checked like the first URI).
    #[arg(long, env = "CLIP_WORKER_MAX_REDIRECTS", default_value_t = defaults::MAX_REDIRECTS)]
    pub max_redirects: u32,
    /// URIs fetched at once; further fetches wait for a free slot.
    #[arg(long, env = "CLIP_WORKER_MAX_CONCURRENT_FETCHES", default_value_t = defaults::MAX_CONCURRENT_FETCHES)]
    pub max_concurrent_fetches: usize,
}

impl UriArgs {
    /// The policy these flags describe, for documents of at most `max_bytes` bytes.
    pub(crate) fn workers(&self, max_bytes: u64) -> Result<FetchWorkers, LocalRootError> {
        let local_files = match (&self.allow_local_root, self.allow_local_files) {
            (Some(root), deprecated) => {
                if deprecated {
                    tracing::warn!("--allow-local-files is ignored: --allow-local-root is set");
                }
                LocalFiles::under(root)?
            }
            (None, true) => {
                tracing::warn!("--allow-local-files is deprecated: use --allow-local-root DIR");
                LocalFiles::Anywhere
            }
            (None, false) => LocalFiles::Refused,
        };
        let config = FetchConfig {
            local_files,
            allow_http: self.allow_http,
            network: NetworkPolicy {
                allow_any_address: false,
                allow_private_networks: self.allow_private_networks,
                allow_hosts: self
                    .allow_uri_hosts
                    .iter()
                    .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
            },
            max_bytes,
            connect_timeout: self.fetch_connect_timeout,
            timeout: self.fetch_timeout,
            max_redirects: self.max_redirects,
        };
        Ok(FetchWorkers::new(
            FetchPolicy::new(config),
            self.max_concurrent_fetches,
        ))
    }
}
