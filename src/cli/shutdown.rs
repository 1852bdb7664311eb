//! Stop signals for `serve`: the first SIGTERM/SIGINT starts a bounded drain, a second one
//! stops the process at once, and a watchdog ends it if the drain outlives its deadline
//! (whatever the NATS connection or a stuck thread is doing).

use std::time::{Duration, Instant};

/// Past the deadline, the time allowed to the last steps (runtime teardown, log flush) before
/// the watchdog ends the process.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Exit status when a second signal or the watchdog ends the process.
pub(crate) const FORCED_EXIT: i32 = 1;

/// SIGTERM and SIGINT, listened to from start-up on (the default action would kill the process
/// without a log line while the model loads or NATS is awaited).
pub(crate) struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Waits for the next SIGTERM or SIGINT and names it.
    pub(crate) async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }

    /// After the first signal: a second one ends the process at once, without draining.
    pub(crate) fn exit_on_second(mut self) {
        tokio::spawn(async move {
            let signal = self.next().await;
            tracing::error!(signal, "second stop signal: exiting now without draining");
            eprintln!("clip-worker stopped by a second {signal}");
            std::process::exit(FORCED_EXIT);
        });
    }
}

/// Ends the process if it is still running `EXIT_GRACE` after `deadline`. A plain thread, so
/// it fires even if the async runtime is blocked.
pub(crate) fn start_watchdog(deadline: Instant) {
    let spawned = std::thread::Builder::new()
        .name("clip-worker-shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()) + EXIT_GRACE);
            tracing::error!("shutdown outlived --shutdown-timeout; exiting now");
            eprintln!("clip-worker stopped: shutdown deadline passed");
            std::process::exit(FORCED_EXIT);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown watchdog");
    }
}
