//! Header names of the protocol (`docs/protocol.md`, "Headers").

/// On a job: where its result is published.
pub(crate) const REPLY_TO: &str = "Clip-Reply-To";
/// On a result: the job's id (its `Nats-Msg-Id`, else `stream:sequence`).
pub(crate) const JOB_ID: &str = "Clip-Job-Id";
/// On every request and response: the protocol version.
pub(crate) const PROTOCOL: &str = "Clip-Protocol";
/// On a job and on its result: JetStream's de-duplication id.
pub(crate) use async_nats::header::NATS_MESSAGE_ID as MESSAGE_ID;
