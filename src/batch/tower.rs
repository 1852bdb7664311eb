//! One inference thread per tower: gathers a minibatch (size- and delay-bounded) and runs it.

use super::stats::TowerStats;
use super::BatchConfig;
use crate::engine::{Embedded, InferenceError};
use crate::error::{DocError, ErrorChain, ErrorCode};
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

/// What a tower thread needs besides its queue and its model.
pub(super) struct Tower {
    pub modality: Modality,
    pub config: BatchConfig,
    pub stats: Arc<TowerStats>,
}

impl Tower {
    /// Runs minibatches until every sender of `rx` is gone and the queue is empty.
    pub(super) fn run<T, F>(&self, rx: Receiver<TowerJob<T>>, run: F)
    where
        F: Fn(&[&T]) -> Result<Vec<Vec<f32>>, InferenceError>,
    {
        let modality = self.modality;
        // Blocks for the first document, then takes whatever else arrives before the deadline.
        while let Ok(first) = rx.recv() {
            let deadline = Instant::now() + self.config.max_batch_delay;
            let mut batch = vec![first];
            while batch.len() < self.config.minibatch_size {
                match rx.recv_deadline(deadline) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let started = Instant::now();
            let inputs: Vec<&T> = batch.iter().map(|j| &j.input).collect();
            let result = {
                let messages = batch.iter().map(|j| &j.span);
                let _s = telemetry::trace::batch_span(modality.as_str(), messages, batch.len())
                    .entered();
                // A panic inside the runtime bindings fails this batch, not the tower thread.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&inputs)))
                    .unwrap_or(Err(InferenceError::Panicked))
            };
            let took = started.elapsed();
            // `$SRV.STATS` and the Prometheus series count the same batches.
            self.stats.record(batch.len(), took);
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
                Err(e) => {
                    let message = ErrorChain(&e).to_string();
                    tracing::warn!(modality = modality.as_str(), batch = batch.len(), error = %message, "inference failed");
                    fail(batch, message)
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    type Reply = oneshot::Receiver<Result<Embedded, DocError>>;
    /// The batch sizes the fake model saw, in order.
    type Sizes = Arc<Mutex<Vec<usize>>>;

    fn tower(minibatch_size: usize, max_batch_delay: Duration) -> Tower {
        Tower {
            modality: Modality::Text,
            config: BatchConfig {
                minibatch_size,
                max_batch_delay,
                ..BatchConfig::default()
            },
            stats: Arc::default(),
        }
    }

    fn job(input: u32) -> (TowerJob<u32>, Reply) {
        let (reply, rx) = oneshot::channel();
        let span = tracing::Span::none();
        (
            TowerJob {
                input,
                reply,
                span,
                enqueued: Instant::now(),
            },
            rx,
        )
    }

    /// A fake model: each input becomes a one-value embedding; batch sizes are recorded.
    fn echo(sizes: Sizes) -> impl Fn(&[&u32]) -> Result<Vec<Vec<f32>>, InferenceError> {
        move |batch| {
            sizes.lock().unwrap().push(batch.len());
            Ok(batch.iter().map(|&&v| vec![v as f32]).collect())
        }
    }

    /// Runs `t` with the echo model on its own thread, as the pipeline does.
    fn spawn_echo(
        t: Tower,
    ) -> (
        crossbeam_channel::Sender<TowerJob<u32>>,
        Sizes,
        std::thread::JoinHandle<()>,
    ) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let recorded = sizes.clone();
        let thread = std::thread::spawn(move || t.run(rx, echo(recorded)));
        (tx, sizes, thread)
    }

    /// Waits for a reply; the generous limit only turns a hang into a failure.
    fn wait(mut rx: Reply) -> Result<Embedded, DocError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("no reply: {e:?}"),
            }
        }
    }

    #[test]
    fn minibatches_never_exceed_the_size_bound() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let replies: Vec<Reply> = (0..10)
            .map(|i| {
                let (j, r) = job(i);
                tx.send(j).unwrap();
                r
            })
            .collect();
        drop(tx);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        // An hour-long delay: only the size bound (and the closed queue) can cut a batch.
        let t = tower(4, Duration::from_secs(3600));
        t.run(rx, echo(sizes.clone()));
        assert_eq!(*sizes.lock().unwrap(), vec![4, 4, 2]);
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(wait(r).unwrap().embedding, vec![i as f32]);
        }
        let stats = t.stats.snapshot();
        assert_eq!((stats.batches, stats.docs, stats.max_batch), (3, 10, 4));
    }

    #[test]
    fn a_partial_minibatch_runs_once_the_delay_is_over() {
        let (tx, sizes, thread) = spawn_echo(tower(8, Duration::from_millis(20)));
        let (a, reply) = job(7);
        tx.send(a).unwrap();
        // The queue stays open and the batch is far from full: only the delay can release it.
        assert_eq!(wait(reply).unwrap().embedding, vec![7.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn a_minibatch_waits_for_documents_that_arrive_within_the_delay() {
        let (tx, sizes, thread) = spawn_echo(tower(2, Duration::from_secs(3600)));
        let (a, first) = job(1);
        tx.send(a).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (b, second) = job(2);
        tx.send(b).unwrap();
        assert_eq!(wait(first).unwrap().embedding, vec![1.0]);
        assert_eq!(wait(second).unwrap().embedding, vec![2.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![2]);
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn a_failed_or_panicking_batch_fails_its_documents_and_the_tower_goes_on() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut replies = Vec::new();
        for i in 0..3 {
            let (j, r) = job(i);
            tx.send(j).unwrap();
            replies.push(r);
        }
        drop(tx);
        let model = |batch: &[&u32]| match *batch[0] {
            0 => Err(InferenceError::BadInput {
                tower: "textual",
                message: "fake".into(),
            }),
            1 => panic!("fake model panic"),
            _ => Ok(vec![vec![1.0]]),
        };
        tower(1, Duration::ZERO).run(rx, model);
        let mut replies = replies.into_iter().map(wait);
        let failed = replies.next().unwrap().unwrap_err();
        assert_eq!(failed.code, ErrorCode::Inference);
        assert!(failed.message.contains("fake"), "{}", failed.message);
        let panicked = replies.next().unwrap().unwrap_err();
        assert_eq!(panicked.code, ErrorCode::Inference);
        assert!(replies.next().unwrap().is_ok());
    }
}
