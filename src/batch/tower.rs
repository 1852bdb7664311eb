//! One inference thread per tower: gathers a minibatch (size- and delay-bounded) and runs it.

use super::stats::TowerStats;
use super::BatchConfig;
use crate::engine::{Embedded, InferenceError};
use crate::error::{DocError, ErrorCode};
use crate::preprocess::input::Modality;
use crate::telemetry;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub(super) struct TowerJob<T> {
    pub input: T,
    pub reply: oneshot::Sender<Result<Embedded, DocError>>,
    pub span: tracing::Span,
    /// When it joined the tower's queue: the start of its wait for a minibatch.
    pub enqueued: Instant,
}

pub(super) fn spawn<T, F>(
    name: &str,
    rx: Receiver<TowerJob<T>>,
    modality: Modality,
    config: BatchConfig,
    stats: Arc<TowerStats>,
    run: F,
) -> Option<std::thread::JoinHandle<()>>
where
    T: Send + 'static,
    F: Fn(&[&T]) -> Result<Vec<Vec<f32>>, InferenceError> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || tower_loop(rx, modality, config, stats, run))
        .ok()
}

fn tower_loop<T, F>(
    rx: Receiver<TowerJob<T>>,
    modality: Modality,
    config: BatchConfig,
    stats: Arc<TowerStats>,
    run: F,
) where
    F: Fn(&[&T]) -> Result<Vec<Vec<f32>>, InferenceError>,
{
    // Blocks for the first document, then takes whatever else arrives before the deadline.
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + config.max_batch_delay;
        let mut batch = vec![first];
        while batch.len() < config.minibatch_size {
            match rx.recv_deadline(deadline) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let started = Instant::now();
        let inputs: Vec<&T> = batch.iter().map(|j| &j.input).collect();
        let result = {
            let messages = batch.iter().map(|j| &j.span);
            let _s =
                telemetry::trace::batch_span(modality.as_str(), messages, batch.len()).entered();
            // A panic inside the runtime bindings fails this batch, not the tower thread.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&inputs)))
                .unwrap_or_else(|_| Err(InferenceError::Ort("inference panicked".into())))
        };
        let took = started.elapsed();
        // `$SRV.STATS` and the Prometheus series count the same batches.
        stats.record(batch.len(), took);
        record_batch(modality, &batch, started, took);
        match result {
            Ok(rows) if rows.len() == batch.len() => {
                for (job, embedding) in batch.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(Embedded {
                        modality,
                        embedding,
                    }));
                }
            }
            Ok(rows) => {
                let n = batch.len();
                fail(
                    batch,
                    format!("model returned {} rows for {n} inputs", rows.len()),
                )
            }
            Err(e) => fail(batch, e.to_string()),
        }
    }
}

fn record_batch<T>(modality: Modality, batch: &[TowerJob<T>], started: Instant, took: Duration) {
    let m = telemetry::metrics();
    let label = [modality.as_str()];
    let waits = m.queue_wait_duration.with_label_values(&label);
    for job in batch {
        waits.observe(
            started
                .saturating_duration_since(job.enqueued)
                .as_secs_f64(),
        );
    }
    m.batch_size
        .with_label_values(&label)
        .observe(batch.len() as f64);
    m.inference_executions.with_label_values(&label).inc();
    m.inferences
        .with_label_values(&label)
        .inc_by(batch.len() as u64);
    m.inference_duration
        .with_label_values(&label)
        .observe(took.as_secs_f64());
}

fn fail<T>(batch: Vec<TowerJob<T>>, message: String) {
    let err = DocError::new(ErrorCode::Inference, message);
    for job in batch {
        let _ = job.reply.send(Err(err.clone()));
    }
}
