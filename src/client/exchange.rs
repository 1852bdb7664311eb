//! One try of one request: a NATS request and its reply, or a durable job published and its
//! result awaited. Retrying is the caller's business ([`super::retry`]).

use super::{Client, Options};
use crate::error::{DocError, ErrorCode};
use crate::protocol::{self, headers, JobKind, Response, PROTOCOL_VERSION};
use crate::telemetry::trace;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use tracing::Instrument;

/// Why one try brought no response.
#[derive(Debug)]
pub(super) struct Failure {
    pub error: DocError,
    /// Whether trying again may help (no worker listening, a dropped connection).
    pub retry: bool,
}

impl Failure {
    fn fatal(code: ErrorCode, message: String) -> Self {
        Failure {
            error: DocError::new(code, message),
            retry: false,
        }
    }

    fn transient(code: ErrorCode, message: String) -> Self {
        Failure {
            error: DocError::new(code, message),
            retry: true,
        }
    }
}

/// The answer to a message the server refused as larger than `max_payload`: the caller splits.
fn too_large_response(e: &dyn std::fmt::Display) -> Response {
    Response::failure(None, "", DocError::new(ErrorCode::TooLarge, e.to_string()))
}

impl Client {
    /// Sends an encoded request once, as `id` (a job's id when durable).
    pub(super) async fn send_once(
        &self,
        kind: JobKind,
        id: &str,
        payload: Bytes,
        opts: &Options,
    ) -> Result<Response, Failure> {
        if opts.durable {
            self.job_once(kind, id, payload, opts).await
        } else {
            self.request_once(kind, payload, opts).await
        }
    }

    async fn request_once(
        &self,
        kind: JobKind,
        payload: Bytes,
        opts: &Options,
    ) -> Result<Response, Failure> {
        let subject = self.subject(kind);
        let mut request_headers = HeaderMap::new();
        request_headers.insert(headers::PROTOCOL, PROTOCOL_VERSION);
        // The request's producer span: the worker's spans continue its trace.
        let span = trace::send_span(&subject);
        trace::inject(&span, &mut request_headers, None);
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(request_headers)
            .timeout(Some(opts.timeout));
        let sent = self
            .nats
            .send_request(subject.clone(), request)
            .instrument(span)
            .await;
        match sent {
            Ok(msg) => protocol::decode_response(&msg.payload).map_err(|e| {
                Failure::fatal(
                    ErrorCode::Internal,
                    format!("reply on `{subject}`: {}", e.message),
                )
            }),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => Failure::transient(
                    ErrorCode::Unavailable,
                    format!("no worker is listening on `{subject}`"),
                ),
                // The worker may still be working on it: sending it again would double the load.
                RequestErrorKind::TimedOut => Failure::fatal(
                    ErrorCode::Timeout,
                    format!("no reply on `{subject}` within {:?}", opts.timeout),
                ),
                RequestErrorKind::MaxPayloadExceeded => return Ok(too_large_response(&e)),
                RequestErrorKind::InvalidSubject => Failure::fatal(
                    ErrorCode::BadRequest,
                    format!("`{subject}` is not a valid subject: check --prefix"),
                ),
                RequestErrorKind::Other => Failure::transient(
                    ErrorCode::Unavailable,
                    format!("request on `{subject}`: {e}"),
                ),
            }),
        }
    }

    async fn job_once(
        &self,
        kind: JobKind,
        job_id: &str,
        payload: Bytes,
        opts: &Options,
    ) -> Result<Response, Failure> {
        let inbox = self.job_inbox().await.map_err(|error| Failure {
            error,
            retry: false,
        })?;
        let subject = self.jobs_subject(kind);
        let mut job_headers = HeaderMap::new();
        job_headers.insert(headers::REPLY_TO, inbox.subject.as_str());
        job_headers.insert(headers::MESSAGE_ID, job_id);
        job_headers.insert(headers::PROTOCOL, PROTOCOL_VERSION);
        let span = trace::send_span(&subject);
        trace::inject(&span, &mut job_headers, None);
        let rx = inbox.register(job_id);
        let published = async {
            match self
                .jetstream
                .publish_with_headers(subject.clone(), job_headers, payload)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await;
        if let Err(e) = published {
            inbox.forget(job_id);
            return Err(match e.kind() {
                PublishErrorKind::StreamNotFound => Failure::fatal(
                    ErrorCode::Unavailable,
                    format!("no JetStream stream captures `{subject}`: is a worker serving durable jobs with this prefix?"),
                ),
                PublishErrorKind::MaxPayloadExceeded => return Ok(too_large_response(&e)),
                _ => Failure::transient(
                    ErrorCode::Unavailable,
                    format!("publishing a job to `{subject}`: {e}"),
                ),
            });
        }
        match tokio::time::timeout(opts.timeout, rx).await {
            Ok(Ok(msg)) => protocol::decode_response(&msg.payload).map_err(|e| {
                Failure::fatal(
                    ErrorCode::Internal,
                    format!("result of job `{job_id}`: {}", e.message),
                )
            }),
            Ok(Err(_)) => Err(Failure::fatal(
                ErrorCode::Internal,
                format!("the results inbox closed before job `{job_id}` was answered"),
            )),
            Err(_) => {
                inbox.forget(job_id);
                Err(Failure::fatal(
                    ErrorCode::Timeout,
                    format!(
                        "no result for job `{job_id}` within {:?}; it stays queued in the stream",
                        opts.timeout
                    ),
                ))
            }
        }
    }
}
