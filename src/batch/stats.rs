//! Counters describing the batches formed, readable while the worker runs.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct TowerStats {
    batches: AtomicU64,
    docs: AtomicU64,
    max_batch: AtomicU64,
    busy_micros: AtomicU64,
}

/// A point-in-time copy of one tower's counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TowerSnapshot {
    pub batches: u64,
    pub docs: u64,
    pub max_batch: u64,
    pub mean_batch: f64,
    pub busy_seconds: f64,
}

impl TowerStats {
    pub(crate) fn record(&self, size: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.docs.fetch_add(size as u64, Ordering::Relaxed);
        self.max_batch.fetch_max(size as u64, Ordering::Relaxed);
        self.busy_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TowerSnapshot {
        let batches = self.batches.load(Ordering::Relaxed);
        let docs = self.docs.load(Ordering::Relaxed);
        TowerSnapshot {
            batches,
            docs,
            max_batch: self.max_batch.load(Ordering::Relaxed),
            mean_batch: if batches == 0 {
                0.0
            } else {
                docs as f64 / batches as f64
            },
            busy_seconds: self.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[derive(Debug, Default)]
pub struct BatchStats {
    pub text: Arc<TowerStats>,
    pub image: Arc<TowerStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatchSnapshot {
    pub text: TowerSnapshot,
    pub image: TowerSnapshot,
}

impl BatchStats {
    pub fn snapshot(&self) -> BatchSnapshot {
        BatchSnapshot {
            text: self.text.snapshot(),
            image: self.image.snapshot(),
        }
    }
}
