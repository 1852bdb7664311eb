//! Start-up against a NATS that may not be there yet: workers and NATS start in any order (in
//! Kubernetes, for one), so connecting and setting up the stream, the consumer and the service
//! endpoints are retried with a capped backoff until they succeed or fail for good.

use super::connect::{ConnectError, NatsOptions};
use crate::error::ErrorChain;
use async_nats::connection::State;
use std::future::Future;
use std::time::Duration;

/// First wait between attempts; it doubles up to [`RETRY_MAX`].
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(250);
/// Longest wait between attempts: a worker notices NATS at most this long after it is up.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether a start-up failure may pass by trying again (NATS away, JetStream not ready yet)
/// rather than needing an operator (a bad URL, a stream that `--bind-existing` cannot find).
pub(crate) trait Transient {
    fn is_transient(&self) -> bool;
}

/// Doubling waits, capped.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: RETRY_FIRST,
            max: RETRY_MAX,
        }
    }
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

impl Transient for ConnectError {
    fn is_transient(&self) -> bool {
        use async_nats::ConnectErrorKind as Kind;
        match self {
            ConnectError::Connect { source, .. } => {
                matches!(source.kind(), Kind::Io | Kind::TimedOut | Kind::Dns)
            }
            _ => false,
        }
    }
}

/// Connects, trying again while the failure is transient.
pub(crate) async fn connect(options: &NatsOptions) -> Result<async_nats::Client, ConnectError> {
    let mut backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match options.connect().await {
            Ok(client) => return Ok(client),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(attempt, retry_in = ?delay, error = %ErrorChain(&e), "connecting to NATS failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `attempt` until it succeeds or fails for good. An attempt starts only once the client
/// is connected (against a disconnected client it could only time out); each transient failure,
/// and each wait for the connection, is logged once.
pub(crate) async fn retry<T, E, F, Fut>(
    what: &str,
    client: &async_nats::Client,
    mut attempt: F,
) -> Result<T, E>
where
    E: Transient + std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let delay = backoff.next_delay();
        if !connected_within(client, delay).await {
            tracing::warn!(attempt = tries, retry_in = ?delay, "{what}: NATS not reachable yet; waiting");
            continue;
        }
        match attempt().await {
            Ok(value) => {
                if tries > 1 {
                    tracing::info!(attempts = tries, "{what} done");
                }
                return Ok(value);
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(attempt = tries, retry_in = ?delay, error = %ErrorChain(&e), "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the client is connected, or becomes so within `wait`.
async fn connected_within(client: &async_nats::Client, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if client.connection_state() == State::Connected {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], RETRY_FIRST);
        assert_eq!(delays[1], RETRY_FIRST * 2);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(delays[7], RETRY_MAX);
    }
}
