//! Least-busy dispatch over replicas (one session set per device).
//!
//! Each minibatch leases the replica with the fewest minibatches in flight; ties go to the one that
//! has run the fewest so far, so an idle pool is used in turn rather than always the first device.

use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

struct Load {
    in_flight: usize,
    dispatched: u64,
}

/// A fixed set of replicas, each leased for one unit of work at a time.
pub(crate) struct LeastBusy<T> {
    replicas: Vec<T>,
    loads: Mutex<Vec<Load>>,
}

/// A replica in use; dropping it returns the slot.
pub(crate) struct Lease<'a, T> {
    pool: &'a LeastBusy<T>,
    index: usize,
}

impl<T> LeastBusy<T> {
    pub(crate) fn new(replicas: Vec<T>) -> Self {
        let loads = replicas
            .iter()
            .map(|_| Load {
                in_flight: 0,
                dispatched: 0,
            })
            .collect();
        LeastBusy {
            replicas,
            loads: Mutex::new(loads),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.replicas.len()
    }

    pub(crate) fn replicas(&self) -> &[T] {
        &self.replicas
    }

    /// Leases the least busy replica, or `None` when there are none.
    pub(crate) fn acquire(&self) -> Option<Lease<'_, T>> {
        let mut loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        let index = loads
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (l.in_flight, l.dispatched, *i))
            .map(|(i, _)| i)?;
        loads[index].in_flight += 1;
        loads[index].dispatched += 1;
        Some(Lease { pool: self, index })
    }

    /// Units of work dispatched to each replica so far.
    pub(crate) fn dispatched(&self) -> Vec<u64> {
        let loads = self.loads.lock().unwrap_or_else(PoisonError::into_inner);
        loads.iter().map(|l| l.dispatched).collect()
    }
}

impl<T> Deref for Lease<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.pool.replicas[self.index]
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        let mut loads = self
            .pool
            .loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = loads.get_mut(self.index) {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_replicas_are_used_in_turn() {
        let pool = LeastBusy::new(vec!["a", "b", "c"]);
        let picked: Vec<&str> = (0..6).map(|_| *pool.acquire().unwrap()).collect();
        assert_eq!(picked, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(pool.dispatched(), [2, 2, 2]);
    }

    #[test]
    fn busy_replicas_are_skipped_until_released() {
        let pool = LeastBusy::new(vec![0, 1]);
        let first = pool.acquire().unwrap();
        let second = pool.acquire().unwrap();
        assert_eq!((first.index, second.index), (0, 1));
        drop(first);
        // Replica 1 is still busy: the next lease goes to the idle replica 0.
        let third = pool.acquire().unwrap();
        assert_eq!(third.index, 0);
        let fourth = pool.acquire().unwrap();
        assert_eq!(
            fourth.index, 1,
            "equal load (one each): fewer dispatched wins"
        );
        drop(second);
        drop(fourth);
        let fifth = pool.acquire().unwrap();
        assert_eq!(fifth.index, 1, "0 still has one in flight");
    }

    #[test]
    fn concurrent_leases_spread_over_replicas() {
        let pool = LeastBusy::new(vec![(), ()]);
        let barrier = std::sync::Barrier::new(2);
        let indices: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let lease = pool.acquire().unwrap();
                        // Both hold a lease at once, so they cannot share a replica.
                        barrier.wait();
                        lease.index
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = indices.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1], "{indices:?}");
    }

    #[test]
    fn an_empty_pool_leases_nothing() {
        let pool: LeastBusy<()> = LeastBusy::new(Vec::new());
        assert!(pool.acquire().is_none());
        assert!(pool.len() == 0);
    }
}
