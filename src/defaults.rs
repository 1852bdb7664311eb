//! Default settings, in one place: the command-line flags (`default_value_t`), the library's
//! `Default` impls and the benches all read these, so a default cannot differ between them.
//! `docs/operations.md` lists them; a test checks the table against `--help`.

use std::time::Duration;

// Engine and batching.

/// Largest minibatch fed to a tower.
pub const MINIBATCH_SIZE: usize = 32;
/// Threads that decode, resize and tokenize.
pub(crate) const NUM_WORKER_PREPROCESS: usize = 4;
/// Longest a minibatch waits to fill once its first document is ready.
pub(crate) const MAX_BATCH_DELAY: Duration = Duration::from_millis(5);
/// Documents admitted by a worker at once.
pub(crate) const MAX_INFLIGHT_DOCS: usize = 2048;
/// Longest expected wait a request/reply call is admitted into: well under the client's
/// default timeout, so that an overloaded worker refuses at once and the caller retries
/// elsewhere instead of timing out.
pub(crate) const MAX_QUEUE_TIME: Duration = Duration::from_secs(10);
/// Minibatch-sized chunks of one request in flight at once (fairness between requests).
pub(crate) const CHUNKS_PER_REQUEST: usize = 2;

// Request limits (worker).

/// Documents per request, matches included.
pub(crate) const MAX_DOCS_PER_REQUEST: usize = 1024;
/// Matches under one rank root.
pub(crate) const MAX_MATCHES: usize = 1024;
/// Characters of one text.
pub(crate) const MAX_TEXT_CHARS: usize = 100_000;
/// Bytes of one document's blob or tensor.
pub(crate) const MAX_DOC_BYTES: usize = 64 * 1024 * 1024;
/// Time limit for fetching one http(s) URI, redirects and body included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit for opening one connection of a fetch.
pub(crate) const FETCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Redirects one fetch follows.
pub(crate) const MAX_REDIRECTS: u32 = 5;
/// URIs a worker fetches at once (the others wait).
pub(crate) const MAX_CONCURRENT_FETCHES: usize = 32;

// Names on NATS.

/// Subject prefix: `<prefix>.encode`, `<prefix>.jobs.encode`, ...
pub(crate) const PREFIX: &str = "clip";
/// Service name in `$SRV` discovery.
pub(crate) const SERVICE_NAME: &str = "clip-worker";
/// Queue group shared by the workers' request/reply endpoints.
pub(crate) const QUEUE_GROUP: &str = "clip-workers";
/// JetStream work-queue stream for durable jobs.
pub(crate) const STREAM: &str = "CLIP_JOBS";
/// Durable pull consumer shared by the workers.
pub(crate) const CONSUMER: &str = "clip-workers";
/// Object Store bucket the `submit` client uploads large images to.
pub(crate) const OBJECT_BUCKET: &str = "clip-uploads";

// Durable jobs (worker).

/// Unacknowledged jobs the server hands out at once (all workers together).
pub(crate) const MAX_ACK_PENDING: i64 = 1024;
/// Time before an unacknowledged job is redelivered.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(30);
/// Deliveries of a job before a transient failure is its result.
pub(crate) const MAX_DELIVER: i64 = 5;
/// Delay before a job nak'ed for a transient failure is redelivered.
pub(crate) const NAK_DELAY: Duration = Duration::from_secs(2);
/// Jobs one worker processes at once.
pub(crate) const MAX_INFLIGHT_JOBS: usize = 64;
/// Time allowed on SIGTERM/SIGINT to finish in-flight work.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

// Connection.

/// NATS server URL.
pub(crate) const NATS_URL: &str = "nats://127.0.0.1:4222";
/// Connection name shown in the server's monitoring.
pub(crate) const NATS_NAME: &str = "clip-worker";

// The `submit` client.

/// Documents per request.
pub(crate) const BATCH_SIZE: usize = 32;
/// Requests (or jobs) in flight at once.
pub(crate) const CONCURRENCY: usize = 4;
/// Wait for one reply (or one job's result) at most this long.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of one request (the first included) when the worker answers `overloaded` or
/// `shutting_down`, or no worker listens.
pub(crate) const MAX_ATTEMPTS: u32 = 6;
