//! Request/reply as a NATS service (`$SRV.PING|INFO|STATS` discovery), endpoints
//! `<prefix>.encode` and `<prefix>.rank` in a queue group shared by every worker.

use super::handler::{AdmissionMode, Handler};
use super::service_error_code;
use crate::error::{BoxError, DocError, ErrorChain, ErrorCode};
use crate::protocol::{self, headers, JobKind, Response, PROTOCOL_VERSION};
use crate::telemetry::{metrics, trace, Transport};
use async_nats::service::{Request, ServiceExt};
use async_nats::HeaderMap;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    /// Service name in `$SRV` discovery.
    pub name: String,
    /// Subject prefix: endpoints are `<prefix>.encode` and `<prefix>.rank`.
    pub prefix: String,
    /// Queue group shared by all workers.
    pub queue_group: String,
}

#[derive(Debug, thiserror::Error)]
#[error("starting the NATS service: {what}")]
pub struct ServiceError {
    what: &'static str,
    #[source]
    source: BoxError,
}

fn failed(what: &'static str) -> impl Fn(BoxError) -> ServiceError {
    move |source| ServiceError { what, source }
}

impl super::startup::Transient for ServiceError {
    /// Registering and subscribing fail only when the connection does.
    fn is_transient(&self) -> bool {
        true
    }
}

/// The registered service and its two endpoints, subscribed on the server.
pub(crate) struct Endpoints {
    service: async_nats::service::Service,
    encode: async_nats::service::endpoint::Endpoint,
    rank: async_nats::service::endpoint::Endpoint,
}

/// Registers the service and subscribes its endpoints; returns once the server has the
/// subscriptions, so the worker can call itself ready.
pub(crate) async fn start(
    client: &async_nats::Client,
    handler: &Handler,
    config: &ServiceConfig,
) -> Result<Endpoints, ServiceError> {
    let stats = handler.pipeline.stats.clone();
    let pipeline = handler.pipeline.clone();
    let metadata: HashMap<String, String> = [
        ("model".to_string(), handler.model.clone()),
        ("protocol".to_string(), PROTOCOL_VERSION.to_string()),
    ]
    .into_iter()
    .collect();
    let service = client
        .service_builder()
        .description("CLIP encode and rank (MessagePack protocol v1)")
        .metadata(metadata)
        .queue_group(&config.queue_group)
        .stats_handler(move |_endpoint, _stats| {
            serde_json::json!({
                "batches": stats.snapshot(),
                "available_doc_slots": pipeline.available(),
            })
        })
        .start(&config.name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(failed("registering the service"))?;
    let group = service.group(&config.prefix);
    let encode = group
        .endpoint(JobKind::Encode.as_str())
        .await
        .map_err(failed("adding the encode endpoint"))?;
    let rank = group
        .endpoint(JobKind::Rank.as_str())
        .await
        .map_err(failed("adding the rank endpoint"))?;
    client
        .flush()
        .await
        .map_err(|e| failed("flushing the subscriptions")(e.into()))?;
    tracing::info!(prefix = %config.prefix, queue = %config.queue_group, "request/reply endpoints ready");
    Ok(Endpoints {
        service,
        encode,
        rank,
    })
}

/// Serves until `shutdown` fires, then stops taking requests and answers the ones already received.
pub(crate) async fn run(
    endpoints: Endpoints,
    handler: Arc<Handler>,
    config: ServiceConfig,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let Endpoints {
        service,
        mut encode,
        mut rank,
    } = endpoints;
    loop {
        let (kind, request) = tokio::select! {
            r = encode.next() => (JobKind::Encode, r),
            r = rank.next() => (JobKind::Rank, r),
            _ = shutdown.cancelled() => break,
        };
        let Some(request) = request else { break };
        spawn_request(&tasks, handler.clone(), kind, request, &config.queue_group);
    }

    // Stop taking new requests, then answer whatever the client library already buffered.
    let _ = encode.stop().await;
    let _ = rank.stop().await;
    for (kind, endpoint) in [(JobKind::Encode, &mut encode), (JobKind::Rank, &mut rank)] {
        while let Ok(Some(request)) =
            tokio::time::timeout(Duration::from_millis(50), endpoint.next()).await
        {
            spawn_request(&tasks, handler.clone(), kind, request, &config.queue_group);
        }
    }
    let _ = service.stop().await;
}

fn spawn_request(
    tasks: &TaskTracker,
    handler: Arc<Handler>,
    kind: JobKind,
    request: Request,
    queue_group: &str,
) {
    let message = &request.message;
    let span = trace::process_span(&trace::Incoming {
        subject: message.subject.as_str(),
        consumer_group: queue_group,
        message_id: None,
        body_size: message.payload.len(),
        delivery_count: None,
        headers: message.headers.as_ref(),
    });
    let task = async move {
        let started = Instant::now();
        let inflight = metrics().request_started(Transport::Service);
        let response = handler
            .handle(kind, &request.message.payload, AdmissionMode::Reject)
            .await;
        super::record_response(
            kind.as_str(),
            Transport::Service,
            &response,
            started.elapsed(),
        );
        drop(inflight);
        let (payload, mut headers) = encode_reply(&response, &handler.model, handler.reply_limit());
        let reply_to = request.message.reply.as_ref().map_or("", |s| s.as_str());
        let publish = trace::publish_span(reply_to);
        trace::inject(&publish, &mut headers, request.message.headers.as_ref());
        let sending = Instant::now();
        if let Err(e) = respond(&handler.client, request, payload, headers)
            .instrument(publish)
            .await
        {
            tracing::warn!(error = %ErrorChain(&e), "could not send reply");
        }
        metrics().record_publish(Transport::Service, sending.elapsed());
    };
    tasks.spawn(task.instrument(span));
}

/// Sends the reply; a request-level error is also counted in the endpoint's `$SRV.STATS`
/// (`num_errors`, `last_error`).
///
/// async-nats records an error only through `respond(Err(..))`, which sends an empty body, while a
/// v1 error reply carries its `Response` in the body (the micro spec allows a body with the error
/// headers). So the error is handed to the library with an empty reply subject, which it counts
/// but refuses to publish to, and the reply itself is published here: the client gets one
/// message, and the count is in place before the reply leaves.
async fn respond(
    client: &async_nats::Client,
    mut request: Request,
    payload: Vec<u8>,
    headers: HeaderMap,
) -> Result<(), async_nats::PublishError> {
    let Some(error) = service_error(&headers) else {
        return request
            .respond_with_headers(Ok(payload.into()), headers)
            .await;
    };
    let Some(reply) = request.message.reply.replace(async_nats::Subject::from("")) else {
        request.message.reply = None;
        // Nothing to answer to (a publish, not a request): the library reports it.
        return request.respond(Err(error)).await;
    };
    // Fails by design (empty subject) after counting the error.
    let _ = request.respond(Err(error)).await;
    client
        .publish_with_headers(reply, headers, payload.into())
        .await
}

/// The service error a reply's headers announce, if any.
fn service_error(headers: &HeaderMap) -> Option<async_nats::service::error::Error> {
    let status = headers.get(async_nats::service::NATS_SERVICE_ERROR)?;
    let code = headers
        .get(async_nats::service::NATS_SERVICE_ERROR_CODE)
        .and_then(|c| c.as_str().parse().ok())
        .unwrap_or(500);
    Some(async_nats::service::error::Error {
        status: status.as_str().to_string(),
        code,
    })
}

/// Encodes a response, swapping in an error if it would exceed `max_payload`, and sets the
/// service error headers for request-level errors.
pub(crate) fn encode_reply(
    response: &Response,
    model: &str,
    max_payload: usize,
) -> (Vec<u8>, HeaderMap) {
    let too_big = |size: usize| {
        Response::failure(
            response.id.clone(),
            model,
            DocError::new(
                ErrorCode::TooLarge,
                format!("response of {size} bytes exceeds the server's max_payload of {max_payload} bytes; send fewer documents per request"),
            ),
        )
    };
    let (payload, response) = match protocol::encode(response) {
        Ok(p) if p.len() <= max_payload => (p, response.clone()),
        Ok(p) => {
            let r = too_big(p.len());
            (protocol::encode(&r).unwrap_or_default(), r)
        }
        Err(e) => {
            let r = Response::failure(response.id.clone(), model, e);
            (protocol::encode(&r).unwrap_or_default(), r)
        }
    };
    let mut reply_headers = HeaderMap::new();
    reply_headers.insert(headers::PROTOCOL, PROTOCOL_VERSION);
    if let Some(err) = &response.error {
        reply_headers.insert(
            async_nats::service::NATS_SERVICE_ERROR,
            err.message.as_str(),
        );
        reply_headers.insert(
            async_nats::service::NATS_SERVICE_ERROR_CODE,
            service_error_code(err.code).to_string().as_str(),
        );
    }
    (payload, reply_headers)
}
