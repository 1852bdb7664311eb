//! The one retry policy of the client. Whatever failed transiently (the worker answered
//! `overloaded` or `shutting_down` for the whole request or for single documents, no worker
//! listened, the connection dropped), a document is tried at most `max_attempts` times in all,
//! with exponential backoff between tries.

use crate::defaults;
use crate::error::{DocError, ErrorCode};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one document, the first included (1: never retry).
    pub max_attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub first_backoff: Duration,
    /// Longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: defaults::MAX_ATTEMPTS,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Whether a document already tried `tries` times may be tried again.
    pub(crate) fn allows_another(&self, tries: u32) -> bool {
        tries < self.max_attempts.max(1)
    }

    /// The wait after the `tries`-th failed try, plus up to a tenth of it as jitter so that
    /// clients turned away together do not come back together.
    pub(crate) fn backoff(&self, tries: u32) -> Duration {
        let doublings = tries.saturating_sub(1).min(16);
        let base = self
            .first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        let spread = u64::try_from((base / 10).as_micros()).unwrap_or(0);
        let noise = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        );
        base + Duration::from_micros(noise % (spread + 1))
    }
}

/// Answers from a worker worth another try: it was full or stopping.
pub(crate) fn transient(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Overloaded | ErrorCode::ShuttingDown)
}

/// The error of a document given up on after `tries` tries, saying so.
pub(crate) fn gave_up(error: DocError, tries: u32) -> DocError {
    if tries <= 1 {
        return error;
    }
    DocError::new(
        error.code,
        format!("{} (after {tries} tries)", error.message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_bounded_and_backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        assert!(p.allows_another(1) && p.allows_another(2) && !p.allows_another(3));
        let within = |tries, base: u64| {
            let d = p.backoff(tries);
            d >= Duration::from_millis(base) && d <= Duration::from_millis(base + base / 10)
        };
        assert!(within(1, 100));
        assert!(within(2, 200));
        assert!(within(3, 300));
        assert!(within(30, 300));
        let never = RetryPolicy {
            max_attempts: 0,
            ..p
        };
        assert!(!never.allows_another(1));
    }

    #[test]
    fn giving_up_names_the_tries() {
        let e = DocError::new(ErrorCode::Overloaded, "full");
        assert_eq!(gave_up(e.clone(), 1), e);
        assert_eq!(gave_up(e, 4).message, "full (after 4 tries)");
    }
}
