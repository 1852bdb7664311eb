//! What a run saw: one sample per request, live counters for the progress line, and the
//! summaries (latency percentiles, throughput per second) computed from them at the end.

use crate::error::ErrorCode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One request: when it was sent (from the start of the run), how long it took, and each
/// document's outcome (`None`: embedded).
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub sent: Duration,
    pub latency: Duration,
    pub docs: Vec<Option<ErrorCode>>,
}

impl Sample {
    /// The request's outcome: `None` when every document was embedded, else the first error.
    pub(crate) fn error(&self) -> Option<ErrorCode> {
        self.docs.iter().flatten().next().copied()
    }

    fn done(&self) -> Duration {
        self.sent + self.latency
    }
}

/// Collects samples from many tasks or threads.
pub(crate) struct Recorder {
    start: Instant,
    samples: Mutex<Vec<Sample>>,
    pub sent: AtomicU64,
    pub done: AtomicU64,
    pub docs_ok: AtomicU64,
    pub docs_failed: AtomicU64,
    /// Messages in the jobs stream, sampled while the run lasts: (seconds, messages).
    stream: Mutex<Vec<(f64, u64)>>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            start: Instant::now(),
            samples: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            docs_ok: AtomicU64::new(0),
            docs_failed: AtomicU64::new(0),
            stream: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Marks a request as sent now and returns its start time.
    pub(crate) fn begin(&self) -> Instant {
        self.sent.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    pub(crate) fn finish(&self, began: Instant, docs: Vec<Option<ErrorCode>>) {
        let ok = docs.iter().filter(|d| d.is_none()).count() as u64;
        self.docs_ok.fetch_add(ok, Ordering::Relaxed);
        self.docs_failed
            .fetch_add(docs.len() as u64 - ok, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
        let sample = Sample {
            sent: began.saturating_duration_since(self.start),
            latency: began.elapsed(),
            docs,
        };
        if let Ok(mut s) = self.samples.lock() {
            s.push(sample);
        }
    }

    pub(crate) fn note_stream(&self, messages: u64) {
        let t = self.elapsed().as_secs_f64();
        if let Ok(mut s) = self.stream.lock() {
            s.push((t, messages));
        }
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn stream_samples(&self) -> Vec<(f64, u64)> {
        self.stream.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The progress line: time, requests, documents per second so far, failures, in flight.
    pub(crate) fn progress_line(&self) -> String {
        let secs = self.elapsed().as_secs_f64().max(1e-9);
        let done = self.done.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let ok = self.docs_ok.load(Ordering::Relaxed);
        let failed = self.docs_failed.load(Ordering::Relaxed);
        format!(
            "[{secs:6.1}s] {done} requests done, {} in flight, {ok} docs ok ({:.1}/s), {failed} failed",
            sent.saturating_sub(done),
            ok as f64 / secs
        )
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Latency {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub(crate) fn of(latencies: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms.get(rank - 1).copied().unwrap_or(0.0)
        };
        Latency {
            count: ms.len(),
            mean_ms: if ms.is_empty() {
                0.0
            } else {
                ms.iter().sum::<f64>() / ms.len() as f64
            },
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// Requests or documents: how many, how many succeeded, and the failures by error code.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Counts {
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub by_error: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, error: Option<ErrorCode>) {
        self.total += 1;
        match error {
            None => self.ok += 1,
            Some(code) => {
                self.failed += 1;
                *self.by_error.entry(code.as_str().to_string()).or_default() += 1;
            }
        }
    }
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Second {
    /// End of the interval, in seconds from the start.
    pub t: u64,
    pub requests: u64,
    pub docs_ok: u64,
    pub docs_failed: u64,
    /// Most messages seen in the jobs stream during the interval (durable runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_messages: Option<u64>,
}

/// Everything computed from the samples.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Summary {
    /// From the first request sent to the last answer.
    pub wall_s: f64,
    pub requests: Counts,
    pub documents: Counts,
    pub requests_per_s: f64,
    /// Documents embedded per second.
    pub docs_per_s: f64,
    /// Requests answered without error.
    pub latency_ok: Latency,
    /// Requests answered with an error, by the first error's code (e.g. `overloaded`).
    pub latency_failed: BTreeMap<String, Latency>,
    pub timeline: Vec<Second>,
}

impl Summary {
    pub(crate) fn of(samples: &[Sample], stream: &[(f64, u64)]) -> Summary {
        let mut s = Summary::default();
        let mut ok = Vec::new();
        let mut failed: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        let first = samples.iter().map(|x| x.sent).min().unwrap_or_default();
        let last = samples.iter().map(Sample::done).max().unwrap_or_default();
        let wall = last.saturating_sub(first).as_secs_f64();
        let seconds = wall.ceil().max(1.0) as usize;
        let mut timeline: Vec<Second> = (1..=seconds)
            .map(|t| Second {
                t: t as u64,
                ..Second::default()
            })
            .collect();
        for x in samples {
            let error = x.error();
            s.requests.add(error);
            for d in &x.docs {
                s.documents.add(*d);
            }
            match error {
                None => ok.push(x.latency),
                Some(code) => failed
                    .entry(code.as_str().to_string())
                    .or_default()
                    .push(x.latency),
            }
            let at = x.done().saturating_sub(first).as_secs_f64() as usize;
            if let Some(sec) = timeline.get_mut(at.min(seconds - 1)) {
                sec.requests += 1;
                let good = x.docs.iter().filter(|d| d.is_none()).count() as u64;
                sec.docs_ok += good;
                sec.docs_failed += x.docs.len() as u64 - good;
            }
        }
        for (t, messages) in stream {
            let at = (t - first.as_secs_f64()).max(0.0) as usize;
            if let Some(sec) = timeline.get_mut(at.min(seconds - 1)) {
                sec.stream_messages = Some(sec.stream_messages.unwrap_or(0).max(*messages));
            }
        }
        s.wall_s = wall;
        let per_s = |n: u64| if wall > 0.0 { n as f64 / wall } else { 0.0 };
        s.requests_per_s = per_s(s.requests.total);
        s.docs_per_s = per_s(s.documents.ok);
        s.latency_ok = Latency::of(&ok);
        s.latency_failed = failed
            .into_iter()
            .map(|(code, l)| (code, Latency::of(&l)))
            .collect();
        s.timeline = timeline;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Latency::of(&l);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(&[]).count, 0);
    }

    #[test]
    fn counts_add_up_and_failures_are_split_by_code() {
        let ms = Duration::from_millis;
        let samples = vec![
            Sample {
                sent: ms(0),
                latency: ms(10),
                docs: vec![None, None],
            },
            Sample {
                sent: ms(500),
                latency: ms(900),
                docs: vec![None, Some(ErrorCode::ImageDecode)],
            },
            Sample {
                sent: ms(600),
                latency: ms(1),
                docs: vec![Some(ErrorCode::Overloaded); 2],
            },
        ];
        let s = Summary::of(&samples, &[(1.2, 7)]);
        assert_eq!(
            (s.requests.total, s.requests.ok, s.requests.failed),
            (3, 1, 2)
        );
        assert_eq!(
            (s.documents.total, s.documents.ok, s.documents.failed),
            (6, 3, 3)
        );
        assert_eq!(s.documents.by_error["overloaded"], 2);
        assert_eq!(s.latency_failed["overloaded"].count, 1);
        assert_eq!(s.timeline.len(), 2);
        assert_eq!(s.timeline[0].docs_ok, 2);
        assert_eq!(s.timeline[1].docs_ok, 1);
        assert_eq!(s.timeline[1].stream_messages, Some(7));
        assert!((s.wall_s - 1.4).abs() < 1e-9);
    }
}
