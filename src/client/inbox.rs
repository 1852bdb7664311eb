//! Where durable-job results arrive: one inbox per client, subscribed before any job is
//! published, routing each result to its job by the `Clip-Job-Id` header.

use crate::error::{DocError, ErrorCode};
use crate::protocol::headers;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

type Routes = Arc<Mutex<HashMap<String, oneshot::Sender<async_nats::Message>>>>;

pub(super) struct JobInbox {
    pub subject: String,
    pending: Routes,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for JobInbox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobInbox {
    pub(crate) async fn open(nats: &async_nats::Client) -> Result<JobInbox, DocError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            DocError::new(ErrorCode::Unavailable, format!("{what}: {e}"))
        };
        let subject = nats.new_inbox();
        let mut sub = nats
            .subscribe(subject.clone())
            .await
            .map_err(|e| unavailable("subscribing to the results inbox", &e))?;
        // Make sure the server has the subscription before any job is published.
        nats.flush()
            .await
            .map_err(|e| unavailable("flushing the results subscription", &e))?;
        let pending = Routes::default();
        let routes = pending.clone();
        let reader = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(headers::JOB_ID))
                    .map(|v| v.as_str().to_string());
                let Some(id) = id else { continue };
                // A job's result can arrive twice (redelivery): only the first is used.
                if let Some(tx) = lock(&routes).remove(&id) {
                    let _ = tx.send(msg);
                }
            }
        });
        Ok(JobInbox {
            subject,
            pending,
            reader,
        })
    }

    /// Starts waiting for a job's result (before the job is published).
    pub(crate) fn register(&self, job_id: &str) -> oneshot::Receiver<async_nats::Message> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(job_id.to_string(), tx);
        rx
    }

    pub(crate) fn forget(&self, job_id: &str) {
        lock(&self.pending).remove(job_id);
    }
}
