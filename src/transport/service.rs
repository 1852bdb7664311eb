//! Request/reply as a NATS service (`$SRV.PING|INFO|STATS` discovery), endpoints
//! `<prefix>.encode` and `<prefix>.rank` in a queue group shared by every worker.

use super::handler::{AdmissionMode, Handler, JobKind};
use super::{service_error_code, PROTOCOL_HEADER};
use crate::error::{DocError, ErrorCode};
use crate::protocol::{self, Response, PROTOCOL_VERSION};
use async_nats::service::{Request, ServiceExt};
use async_nats::HeaderMap;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service name in `$SRV` discovery.
    pub name: String,
    /// Subject prefix: endpoints are `<prefix>.encode` and `<prefix>.rank`.
    pub prefix: String,
    /// Queue group shared by all workers.
    pub queue_group: String,
}

#[derive(Debug, thiserror::Error)]
#[error("starting the NATS service: {0}")]
pub struct ServiceError(String);

/// Serves until `shutdown` fires, then stops taking requests and answers the ones already received.
pub async fn run(
    client: async_nats::Client,
    handler: Arc<Handler>,
    config: ServiceConfig,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), ServiceError> {
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
        .map_err(|e| ServiceError(e.to_string()))?;
    let group = service.group(&config.prefix);
    let mut encode = group
        .endpoint("encode")
        .await
        .map_err(|e| ServiceError(e.to_string()))?;
    let mut rank = group
        .endpoint("rank")
        .await
        .map_err(|e| ServiceError(e.to_string()))?;
    // The subscriptions must be on the server before the worker calls itself ready.
    client
        .flush()
        .await
        .map_err(|e| ServiceError(e.to_string()))?;
    tracing::info!(prefix = %config.prefix, queue = %config.queue_group, "request/reply endpoints ready");
    let _ = ready.send(());

    loop {
        let (kind, request) = tokio::select! {
            r = encode.next() => (JobKind::Encode, r),
            r = rank.next() => (JobKind::Rank, r),
            _ = shutdown.cancelled() => break,
        };
        let Some(request) = request else { break };
        spawn_request(&tasks, handler.clone(), kind, request);
    }

    // Stop taking new requests, then answer whatever the client library already buffered.
    let _ = encode.stop().await;
    let _ = rank.stop().await;
    for (kind, endpoint) in [(JobKind::Encode, &mut encode), (JobKind::Rank, &mut rank)] {
        while let Ok(Some(request)) =
            tokio::time::timeout(Duration::from_millis(50), endpoint.next()).await
        {
            spawn_request(&tasks, handler.clone(), kind, request);
        }
    }
    let _ = service.stop().await;
    Ok(())
}

fn spawn_request(tasks: &TaskTracker, handler: Arc<Handler>, kind: JobKind, request: Request) {
    tasks.spawn(async move {
        let response = handler
            .handle(kind, &request.message.payload, AdmissionMode::Reject)
            .await;
        let (payload, headers) = encode_reply(&response, &handler.model, handler.reply_limit());
        if let Err(e) = respond(&handler.client, request, payload, headers).await {
            tracing::warn!(error = %e, "could not send reply");
        }
    });
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
pub fn encode_reply(response: &Response, model: &str, max_payload: usize) -> (Vec<u8>, HeaderMap) {
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
    let mut headers = HeaderMap::new();
    headers.insert(PROTOCOL_HEADER, PROTOCOL_VERSION);
    if let Some(err) = &response.error {
        headers.insert(
            async_nats::service::NATS_SERVICE_ERROR,
            err.message.as_str(),
        );
        headers.insert(
            async_nats::service::NATS_SERVICE_ERROR_CODE,
            service_error_code(err.code).to_string().as_str(),
        );
    }
    (payload, headers)
}
