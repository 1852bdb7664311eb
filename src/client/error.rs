//! Why the client could not start: per-document failures are [`crate::error::DocError`]s.

use crate::transport::connect::ConnectError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("no connection to NATS at {urls} within {waited:?}")]
    NotConnected { urls: String, waited: Duration },
    #[error("durable jobs: no JetStream stream captures `{subject}`: start a worker with `clip-worker serve` (mode both or jobs) and the same --prefix")]
    NoJobsStream {
        subject: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamByNameError,
    },
}
