//! Sending requests: at a fixed concurrency (each of N senders sends its next request when the
//! previous one is answered) or at a fixed arrival rate (requests start on a clock, however
//! many are still unanswered), for a duration or a number of requests.

use super::record::Recorder;
use crate::error::ErrorCode;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a run stops and how requests arrive.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Requests in flight at once (fixed concurrency).
    pub concurrency: usize,
    /// Requests started per second, however many are in flight (fixed arrival rate); overrides
    /// `concurrency`.
    pub rate: Option<f64>,
    /// How long to send for (ignored when `count` is set).
    pub duration: Duration,
    /// Requests to send.
    pub count: Option<u64>,
    /// Print a progress line on standard error every second.
    pub progress: bool,
}

/// Hands out request numbers until the plan's end.
pub(crate) struct Ticket {
    next: AtomicU64,
    deadline: Instant,
    count: Option<u64>,
}

impl Ticket {
    pub(crate) fn new(plan: &Plan) -> Ticket {
        Ticket {
            next: AtomicU64::new(0),
            deadline: Instant::now() + plan.duration,
            count: plan.count,
        }
    }

    /// The next request's number, or `None` once the run is over.
    pub(crate) fn claim(&self) -> Option<u64> {
        match self.count {
            Some(c) => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                (n < c).then_some(n)
            }
            None if Instant::now() < self.deadline => {
                Some(self.next.fetch_add(1, Ordering::Relaxed))
            }
            None => None,
        }
    }
}

/// Prints the recorder's progress line every second until aborted.
pub(crate) fn spawn_progress(
    recorder: Arc<Recorder>,
    on: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    on.then(|| {
        tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress(&recorder, terminal);
            }
        })
    })
}

fn progress(recorder: &Recorder, terminal: bool) {
    let line = recorder.progress_line();
    let mut err = std::io::stderr().lock();
    let _ = if terminal {
        write!(err, "\r{line}\x1b[K")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}

fn end_progress(handle: Option<tokio::task::JoinHandle<()>>, recorder: &Recorder) {
    if let Some(h) = handle {
        h.abort();
        let terminal = std::io::stderr().is_terminal();
        progress(recorder, terminal);
        if terminal {
            eprintln!();
        }
    }
}

/// Runs `send(n)` for each request number `n` of the plan and records what each one returned
/// (one outcome per document).
pub(crate) async fn drive<F, Fut>(plan: &Plan, recorder: Arc<Recorder>, send: F)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Option<ErrorCode>>> + Send + 'static,
{
    let send = Arc::new(send);
    let ticket = Arc::new(Ticket::new(plan));
    let progress = spawn_progress(recorder.clone(), plan.progress);
    let mut tasks = tokio::task::JoinSet::new();
    match plan.rate {
        Some(rate) if rate > 0.0 => {
            let mut clock = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // Late ticks fire at once: the mean rate holds even when the sender was delayed.
            clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                clock.tick().await;
                let Some(n) = ticket.claim() else { break };
                let (send, recorder) = (send.clone(), recorder.clone());
                tasks.spawn(async move {
                    let began = recorder.begin();
                    let outcome = send.as_ref()(n).await;
                    recorder.finish(began, outcome);
                });
                // Reap finished tasks so a long run does not keep them all.
                while tasks.try_join_next().is_some() {}
            }
        }
        _ => {
            for _ in 0..plan.concurrency.max(1) {
                let (send, recorder, ticket) = (send.clone(), recorder.clone(), ticket.clone());
                tasks.spawn(async move {
                    while let Some(n) = ticket.claim() {
                        let began = recorder.begin();
                        let outcome = send.as_ref()(n).await;
                        recorder.finish(began, outcome);
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    end_progress(progress, &recorder);
}

/// The same on the calling thread, one request after another (in-process baselines that are
/// themselves blocking).
pub(crate) fn drive_blocking(
    plan: &Plan,
    recorder: &Recorder,
    mut send: impl FnMut(u64) -> Vec<Option<ErrorCode>>,
) {
    let ticket = Ticket::new(plan);
    let terminal = std::io::stderr().is_terminal();
    let mut shown = Instant::now();
    while let Some(n) = ticket.claim() {
        let began = recorder.begin();
        let outcome = send(n);
        recorder.finish(began, outcome);
        if plan.progress && shown.elapsed() >= Duration::from_secs(1) {
            shown = Instant::now();
            progress(recorder, terminal);
        }
    }
    if plan.progress {
        progress(recorder, terminal);
        if terminal {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(count: Option<u64>, rate: Option<f64>) -> Plan {
        Plan {
            concurrency: 3,
            rate,
            duration: Duration::from_millis(200),
            count,
            progress: false,
        }
    }

    #[tokio::test]
    async fn a_count_sends_exactly_that_many_requests() {
        for rate in [None, Some(500.0)] {
            let recorder = Arc::new(Recorder::new());
            drive(&plan(Some(20), rate), recorder.clone(), |n| async move {
                vec![(n % 5 == 0).then_some(ErrorCode::Overloaded), None]
            })
            .await;
            let samples = recorder.samples();
            assert_eq!(samples.len(), 20);
            assert_eq!(samples.iter().filter(|s| s.error().is_some()).count(), 4);
        }
    }

    #[test]
    fn a_duration_ends_the_run() {
        let recorder = Recorder::new();
        let started = Instant::now();
        drive_blocking(&plan(None, None), &recorder, |_| {
            std::thread::sleep(Duration::from_millis(10));
            vec![None]
        });
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(!recorder.samples().is_empty());
    }
}
