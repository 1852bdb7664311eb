//! One inference thread per tower: forms minibatches and runs them.
//!
//! An idle tower runs what is queued at once: a lone document pays its model time and nothing
//! more. Larger minibatches form while the tower is busy (documents queue up meanwhile), and the
//! tower waits for more, within the delay bound, only while more documents of its modality are
//! known to be arriving (being preprocessed). Among the queued documents, a minibatch groups
//! similar lengths, so one long caption does not pad many short ones; the oldest document always
//! goes into the next minibatch, so none waits behind later ones for long.

use super::stats::TowerStats;
use super::BatchConfig;
use crate::engine::{Embedded, InferenceError};
use crate::error::{DocError, ErrorChain, ErrorCode};
use crate::preprocess::input::Modality;
use crate::telemetry;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Documents of this modality admitted and not yet in the queue (being preprocessed).
    pub arriving: Arc<AtomicUsize>,
    /// Where admission learns how fast minibatches run.
    pub load: Arc<super::load::Load>,
}

/// How often a waiting tower re-checks whether work is still arriving.
const POLL: Duration = Duration::from_millis(1);

/// The fixed cost of one model run, in token rows: splitting a minibatch must save more
/// padding than this to be worth a second run.
pub(super) const RUN_OVERHEAD: usize = 16;

impl Tower {
    /// Runs minibatches until every sender of `rx` is gone and the queue is empty. `cost` is
    /// the padded length a document would run at (constant for images).
    pub(super) fn run<T, F, C>(&self, rx: Receiver<TowerJob<T>>, run: F, cost: C)
    where
        F: Fn(&[&T]) -> Result<Vec<Vec<f32>>, InferenceError>,
        C: Fn(&T) -> usize,
    {
        let size = self.config.minibatch_size.max(1);
        // A session's first run allocates (and on GPUs compiles kernels): its time says
        // nothing about the next runs, so admission does not learn from it.
        let mut first_run = true;
        // Documents taken off the queue and not run yet, oldest first.
        let mut held: VecDeque<TowerJob<T>> = VecDeque::new();
        loop {
            if held.is_empty() {
                match rx.recv() {
                    Ok(job) => held.push_back(job),
                    Err(_) => return,
                }
            }
            self.gather(&rx, &mut held, size);
            let costs: Vec<usize> = held.iter().map(|j| cost(&j.input)).collect();
            let chosen = plan_minibatch(&costs, size);
            let mut batch = Vec::with_capacity(chosen.len());
            let mut rest = VecDeque::with_capacity(held.len());
            for (i, job) in held.drain(..).enumerate() {
                if chosen.binary_search(&i).is_ok() {
                    batch.push(job);
                } else {
                    rest.push_back(job);
                }
            }
            held = rest;
            self.execute(batch, &run, !first_run);
            first_run = false;
        }
    }

    /// Takes what is queued (up to two minibatches, to choose from), then waits for more only
    /// while documents are known to be arriving, until the oldest has waited the delay.
    fn gather<T>(&self, rx: &Receiver<TowerJob<T>>, held: &mut VecDeque<TowerJob<T>>, size: usize) {
        let window = 2 * size;
        while held.len() < window {
            match rx.try_recv() {
                Ok(job) => held.push_back(job),
                Err(_) => break,
            }
        }
        let Some(oldest) = held.front() else { return };
        let deadline = oldest.enqueued + self.config.max_batch_delay;
        while held.len() < size && self.arriving.load(Ordering::Acquire) > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_deadline(deadline.min(now + POLL)) {
                Ok(job) => held.push_back(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn execute<T, F>(&self, batch: Vec<TowerJob<T>>, run: &F, representative: bool)
    where
        F: Fn(&[&T]) -> Result<Vec<Vec<f32>>, InferenceError>,
    {
        let modality = self.modality;
        let started = Instant::now();
        let inputs: Vec<&T> = batch.iter().map(|j| &j.input).collect();
        let result = {
            let messages = batch.iter().map(|j| &j.span);
            let _s =
                telemetry::trace::batch_span(modality.as_str(), messages, batch.len()).entered();
            // A panic inside the runtime bindings fails this batch, not the tower thread.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&inputs)))
                .unwrap_or(Err(InferenceError::Panicked))
        };
        let took = started.elapsed();
        // `$SRV.STATS` and the Prometheus series count the same batches.
        self.stats.record(batch.len(), took);
        if representative {
            self.load.inferred(modality, batch.len(), took);
        }
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

/// Which of the candidates (oldest first, each with the length it would run at) form the next
/// minibatch: ascending indices, always including 0, the oldest.
///
/// The candidates sorted by length are cut into runs of at most `size` so that the total work,
/// `RUN_OVERHEAD` plus rows × longest length per run, is least; the run holding the oldest goes
/// next. Equal lengths (images, fixed-length text) keep arrival order.
pub(super) fn plan_minibatch(costs: &[usize], size: usize) -> Vec<usize> {
    let n = costs.len();
    let size = size.max(1);
    if n == 0 {
        return Vec::new();
    }
    if costs.iter().all(|c| *c == costs[0]) {
        return (0..n.min(size)).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (costs[*i], *i));
    // best[i]: least work for the sorted candidates i.., with next[i] the end of its first run.
    let mut best = vec![0usize; n + 1];
    let mut next = vec![n; n + 1];
    for i in (0..n).rev() {
        best[i] = usize::MAX;
        // Longest runs first, so ties keep fewer, larger minibatches.
        for j in (i + 1..=(i + size).min(n)).rev() {
            let work = RUN_OVERHEAD
                .saturating_add((j - i).saturating_mul(costs[order[j - 1]]))
                .saturating_add(best[j]);
            if work < best[i] {
                best[i] = work;
                next[i] = j;
            }
        }
    }
    let mut start = 0;
    while start < n {
        let end = next[start];
        if order[start..end].contains(&0) {
            let mut run = order[start..end].to_vec();
            run.sort_unstable();
            return run;
        }
        start = end;
    }
    vec![0]
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
            arriving: Arc::default(),
            load: Arc::new(super::super::load::Load::new(1, 1)),
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
        let thread = std::thread::spawn(move || t.run(rx, echo(recorded), |_: &u32| 1));
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
        t.run(rx, echo(sizes.clone()), |_: &u32| 1);
        assert_eq!(*sizes.lock().unwrap(), vec![4, 4, 2]);
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(wait(r).unwrap().embedding, vec![i as f32]);
        }
        let stats = t.stats.snapshot();
        assert_eq!((stats.batches, stats.docs, stats.max_batch), (3, 10, 4));
    }

    #[test]
    fn an_idle_tower_runs_a_lone_document_at_once() {
        // An hour-long delay and nothing known to be arriving: the document must not wait.
        let (tx, sizes, thread) = spawn_echo(tower(8, Duration::from_secs(3600)));
        let (a, reply) = job(7);
        tx.send(a).unwrap();
        assert_eq!(wait(reply).unwrap().embedding, vec![7.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn a_partial_minibatch_runs_once_the_delay_is_over() {
        let t = tower(8, Duration::from_millis(20));
        // More is said to be arriving but never comes: only the delay can release the batch.
        t.arriving.store(1, Ordering::Release);
        let (tx, sizes, thread) = spawn_echo(t);
        let (a, reply) = job(7);
        tx.send(a).unwrap();
        assert_eq!(wait(reply).unwrap().embedding, vec![7.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn a_minibatch_waits_for_documents_known_to_be_arriving() {
        let t = tower(2, Duration::from_secs(3600));
        let arriving = t.arriving.clone();
        arriving.store(2, Ordering::Release);
        let (tx, sizes, thread) = spawn_echo(t);
        let (a, first) = job(1);
        tx.send(a).unwrap();
        arriving.fetch_sub(1, Ordering::AcqRel);
        std::thread::sleep(Duration::from_millis(50));
        let (b, second) = job(2);
        tx.send(b).unwrap();
        arriving.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(wait(first).unwrap().embedding, vec![1.0]);
        assert_eq!(wait(second).unwrap().embedding, vec![2.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![2]);
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn waiting_stops_when_nothing_more_is_arriving() {
        let t = tower(4, Duration::from_secs(3600));
        let arriving = t.arriving.clone();
        arriving.store(1, Ordering::Release);
        let (tx, sizes, thread) = spawn_echo(t);
        let (a, reply) = job(3);
        tx.send(a).unwrap();
        // The document that was arriving failed preprocessing: the batch of one goes now.
        arriving.store(0, Ordering::Release);
        assert_eq!(wait(reply).unwrap().embedding, vec![3.0]);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
        drop(tx);
        thread.join().unwrap();
    }

    /// Runs the queued jobs (token lengths) through a tower whose cost is the length; returns
    /// the batches as lists of arrival indices.
    fn run_lengths(lengths: &[u32], size: usize) -> Vec<Vec<u32>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut replies = Vec::new();
        for (i, len) in lengths.iter().enumerate() {
            // Input: arrival index * 1000 + length.
            let (j, r) = job(i as u32 * 1000 + len);
            tx.send(j).unwrap();
            replies.push(r);
        }
        drop(tx);
        let batches = Arc::new(Mutex::new(Vec::new()));
        let recorded = batches.clone();
        let model = move |batch: &[&u32]| {
            recorded
                .lock()
                .unwrap()
                .push(batch.iter().map(|v| **v / 1000).collect::<Vec<u32>>());
            Ok(batch.iter().map(|&&v| vec![v as f32]).collect())
        };
        tower(size, Duration::from_secs(3600)).run(rx, model, |v: &u32| (*v % 1000) as usize);
        // Every document gets its own answer, whatever minibatch it ran in.
        for (i, (r, len)) in replies.into_iter().zip(lengths).enumerate() {
            assert_eq!(
                wait(r).unwrap().embedding,
                vec![(i as u32 * 1000 + len) as f32]
            );
        }
        let batches = batches.lock().unwrap().clone();
        batches
    }

    #[test]
    fn one_long_caption_does_not_pad_the_short_ones() {
        let mut lengths = vec![12u32; 31];
        lengths.insert(5, 77);
        let batches = run_lengths(&lengths, 32);
        let long_alone = vec![5u32];
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0].len(), 31);
        assert!(!batches[0].contains(&5));
        assert_eq!(batches[1], long_alone);
    }

    #[test]
    fn the_oldest_document_always_runs_next_and_minibatches_stay_bounded() {
        // Lengths in a repeating irregular pattern; 100 documents, minibatches of 8.
        let lengths: Vec<u32> = (0..100u32).map(|i| 3 + (i * 37 + i * i) % 75).collect();
        let batches = run_lengths(&lengths, 8);
        let mut done = std::collections::BTreeSet::new();
        for b in &batches {
            assert!(!b.is_empty() && b.len() <= 8, "{b:?}");
            let oldest = (0..100u32).find(|i| !done.contains(i)).unwrap();
            assert!(b.contains(&oldest), "{b:?} skips the oldest, {oldest}");
            for i in b {
                assert!(done.insert(*i), "{i} ran twice");
            }
        }
        assert_eq!(done.len(), 100);
        // Grouping paid off: fewer padded rows than arrival order.
        let padded = |groups: &[Vec<u32>]| -> u32 {
            groups
                .iter()
                .map(|g| g.len() as u32 * g.iter().map(|i| lengths[*i as usize]).max().unwrap())
                .sum()
        };
        let fifo: Vec<Vec<u32>> = (0..100u32)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(<[u32]>::to_vec)
            .collect();
        assert!(
            padded(&batches) < padded(&fifo),
            "{} vs {}",
            padded(&batches),
            padded(&fifo)
        );
    }

    #[test]
    fn plans_keep_arrival_order_for_equal_lengths_and_split_only_when_it_pays() {
        assert_eq!(plan_minibatch(&[1; 10], 4), vec![0, 1, 2, 3]);
        assert_eq!(plan_minibatch(&[77; 3], 32), vec![0, 1, 2]);
        assert_eq!(plan_minibatch(&[], 4), Vec::<usize>::new());
        // Close lengths: one run is cheaper than two.
        assert_eq!(plan_minibatch(&[10, 11, 10, 12], 32), vec![0, 1, 2, 3]);
        // The oldest is long: it runs with the other long one, the short ones next.
        assert_eq!(plan_minibatch(&[70, 5, 6, 77, 5], 32), vec![0, 3]);
        // Never more than `size`, the oldest always in.
        let plan = plan_minibatch(&[50, 5, 5, 5, 5, 5, 5], 3);
        assert!(plan.contains(&0) && plan.len() <= 3, "{plan:?}");
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
        tower(1, Duration::ZERO).run(rx, model, |_: &u32| 1);
        let mut replies = replies.into_iter().map(wait);
        let failed = replies.next().unwrap().unwrap_err();
        assert_eq!(failed.code, ErrorCode::Inference);
        assert!(failed.message.contains("fake"), "{}", failed.message);
        let panicked = replies.next().unwrap().unwrap_err();
        assert_eq!(panicked.code, ErrorCode::Inference);
        assert!(replies.next().unwrap().is_ok());
    }
}
