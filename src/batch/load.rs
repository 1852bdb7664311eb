//! How long newly admitted documents would wait, per modality: the documents admitted and not
//! yet answered, times the recent cost per document of the slower stage (the preprocess pool
//! or the tower). Request/reply admission refuses a request whose documents would wait longer
//! than `--max-queue-time`, so that overload is answered `overloaded` at once instead of
//! queueing past the caller's timeout (the count limit, `--max-inflight-docs`, stays the
//! memory bound).

use crate::preprocess::input::{Document, Modality};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Weight of one minibatch in the tower's cost average: a few minibatches follow a change of
/// load (larger minibatches cost less per document).
const TOWER_WEIGHT: f64 = 0.3;
/// Weight of one document in the preprocessing cost average (many more samples).
const PREPARE_WEIGHT: f64 = 0.05;

/// A moving average of seconds per document; unknown until the first sample.
#[derive(Debug, Default)]
struct Cost {
    /// `f64` bits; 0 is "no sample yet". Concurrent updates may lose one another's sample,
    /// which an average can afford.
    bits: AtomicU64,
}

impl Cost {
    fn observe(&self, seconds: f64, weight: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let old = self.seconds();
        let new = match old {
            None => seconds,
            Some(old) => old + weight * (seconds - old),
        };
        self.bits
            .store(new.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }

    fn seconds(&self) -> Option<f64> {
        match self.bits.load(Ordering::Relaxed) {
            0 => None,
            bits => Some(f64::from_bits(bits)),
        }
    }
}

/// One modality's backlog and costs.
#[derive(Debug, Default)]
struct Lane {
    admitted: AtomicUsize,
    prepare: Cost,
    infer: Cost,
}

/// Documents of each modality in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DocCounts {
    pub text: usize,
    pub image: usize,
}

impl DocCounts {
    /// Counts by the modality each document will run on; a document whose content cannot be
    /// read fails in preprocessing at no cost and counts for neither.
    pub(crate) fn of(docs: &[Document]) -> DocCounts {
        let mut counts = DocCounts::default();
        for doc in docs {
            match doc.content().map(|c| c.modality()) {
                Ok(Modality::Text) => counts.text += 1,
                Ok(Modality::Image) => counts.image += 1,
                Err(_) => {}
            }
        }
        counts
    }

    fn get(&self, modality: Modality) -> usize {
        match modality {
            Modality::Text => self.text,
            Modality::Image => self.image,
        }
    }
}

/// The pipeline's backlog and recent speed, shared by admission, the preprocess pool and the
/// towers.
#[derive(Debug)]
pub(crate) struct Load {
    text: Lane,
    image: Lane,
    /// Preprocess threads and tower replicas: documents of one stage run that many at once.
    prepare_threads: usize,
    replicas: usize,
}

impl Load {
    pub(crate) fn new(prepare_threads: usize, replicas: usize) -> Load {
        Load {
            text: Lane::default(),
            image: Lane::default(),
            prepare_threads: prepare_threads.max(1),
            replicas: replicas.max(1),
        }
    }

    fn lane(&self, modality: Modality) -> &Lane {
        match modality {
            Modality::Text => &self.text,
            Modality::Image => &self.image,
        }
    }

    /// One document prepared in `took` (by one pool thread).
    pub(crate) fn prepared(&self, modality: Modality, took: Duration) {
        self.lane(modality)
            .prepare
            .observe(took.as_secs_f64(), PREPARE_WEIGHT);
    }

    /// One minibatch of `size` documents run in `took` (by one tower thread).
    pub(crate) fn inferred(&self, modality: Modality, size: usize, took: Duration) {
        if size > 0 {
            self.lane(modality)
                .infer
                .observe(took.as_secs_f64() / size as f64, TOWER_WEIGHT);
        }
    }

    /// Seconds per document of the slower stage, as the pipeline runs them in parallel; `None`
    /// before the first document of this modality has been through both.
    fn seconds_per_doc(&self, modality: Modality) -> Option<f64> {
        let lane = self.lane(modality);
        let prepare = lane.prepare.seconds()? / self.prepare_threads as f64;
        let infer = lane.infer.seconds()? / self.replicas as f64;
        Some(prepare.max(infer))
    }

    /// Documents of this modality admitted and not yet answered.
    pub(crate) fn backlog(&self, modality: Modality) -> usize {
        self.lane(modality).admitted.load(Ordering::Relaxed)
    }

    /// How long the last of `extra` more documents would wait for its answer, at recent speed.
    pub(crate) fn expected_wait(&self, modality: Modality, extra: usize) -> Option<Duration> {
        let per_doc = self.seconds_per_doc(modality)?;
        let docs = self.backlog(modality) + extra;
        Duration::try_from_secs_f64(docs as f64 * per_doc).ok()
    }

    /// The modality (and its expected wait) that `counts` more documents would hold up past
    /// `limit`, if any. Documents of a modality with nothing in flight are always admitted (an
    /// idle worker takes any request, however long it runs), and so is a backlog of at most
    /// one minibatch: the towers run a minibatch at once.
    pub(crate) fn over_limit(
        &self,
        counts: DocCounts,
        limit: Duration,
        minibatch: usize,
    ) -> Option<(Modality, Duration)> {
        [Modality::Text, Modality::Image]
            .into_iter()
            .filter(|m| {
                let (queued, more) = (self.backlog(*m), counts.get(*m));
                more > 0 && queued > 0 && queued + more > minibatch
            })
            .find_map(|m| {
                self.expected_wait(m, counts.get(m))
                    .filter(|wait| *wait > limit)
                    .map(|wait| (m, wait))
            })
    }

    pub(crate) fn add(&self, counts: DocCounts) {
        self.text.admitted.fetch_add(counts.text, Ordering::Relaxed);
        self.image
            .admitted
            .fetch_add(counts.image, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, counts: DocCounts) {
        for (lane, n) in [(&self.text, counts.text), (&self.image, counts.image)] {
            // Never below zero, whatever the order of concurrent releases.
            let _ = lane
                .admitted
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nothing_is_refused_before_the_costs_are_known() {
        let load = Load::new(1, 1);
        load.add(DocCounts {
            text: 1000,
            image: 0,
        });
        let more = DocCounts { text: 1, image: 0 };
        assert_eq!(load.over_limit(more, ms(1), 32), None);
        load.prepared(Modality::Text, ms(1));
        assert_eq!(load.over_limit(more, ms(1), 32), None, "tower cost unknown");
    }

    #[test]
    fn the_wait_is_the_backlog_at_the_slower_stage() {
        let load = Load::new(4, 1);
        load.prepared(Modality::Image, ms(100)); // 4 threads: 25 ms a document
        load.inferred(Modality::Image, 10, ms(500)); // 50 ms a document
        load.add(DocCounts { text: 0, image: 19 });
        assert_eq!(load.expected_wait(Modality::Image, 1), Some(ms(1000)));
        let one = DocCounts { text: 0, image: 1 };
        assert_eq!(load.over_limit(one, ms(1000), 8), None);
        assert_eq!(
            load.over_limit(one, ms(999), 8),
            Some((Modality::Image, ms(1000)))
        );
        // Texts have their own lane: nothing known, nothing refused.
        let text = DocCounts { text: 1, image: 0 };
        assert_eq!(load.over_limit(text, ms(1), 8), None);
    }

    #[test]
    fn one_minibatch_is_always_admitted() {
        let load = Load::new(1, 1);
        load.prepared(Modality::Text, ms(1));
        load.inferred(Modality::Text, 1, Duration::from_secs(10));
        let batch = DocCounts { text: 31, image: 0 };
        load.add(DocCounts { text: 1, image: 0 });
        assert_eq!(load.over_limit(batch, ms(1), 32), None);
        let more = DocCounts { text: 32, image: 0 };
        assert!(load.over_limit(more, ms(1), 32).is_some());
        // Nothing in flight: any request is admitted.
        load.remove(DocCounts { text: 1, image: 0 });
        let huge = DocCounts {
            text: 1000,
            image: 0,
        };
        assert_eq!(load.over_limit(huge, ms(1), 32), None);
    }

    #[test]
    fn replicas_and_the_average_follow_the_recent_minibatches() {
        let load = Load::new(1, 2);
        load.prepared(Modality::Text, ms(0));
        load.inferred(Modality::Text, 1, ms(100));
        for _ in 0..40 {
            load.inferred(Modality::Text, 32, ms(640)); // 20 ms a document
        }
        let wait = load.expected_wait(Modality::Text, 100).unwrap();
        // Two replicas: 10 ms a document once the average has settled.
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
    }

    #[test]
    fn releases_never_go_below_zero() {
        let load = Load::new(1, 1);
        load.add(DocCounts { text: 2, image: 1 });
        load.remove(DocCounts { text: 5, image: 1 });
        assert_eq!(load.backlog(Modality::Text), 0);
        assert_eq!(load.backlog(Modality::Image), 0);
    }
}
