//! Header names of the protocol (`docs/protocol.md`, "Headers").

/// On a job: where its result is published.
pub const REPLY_TO: &str = "Clip-Reply-To";
/// On a result: the job's id (its `Nats-Msg-Id`, else `stream:sequence`).
pub const JOB_ID: &str = "Clip-Job-Id";
/// On every request and response: the protocol version.
pub const PROTOCOL: &str = "Clip-Protocol";
/// On a job and on its result: JetStream's de-duplication id.
pub use async_nats::header::NATS_MESSAGE_ID as MESSAGE_ID;
