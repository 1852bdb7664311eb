//! Download progress: a bar when standard error is a terminal, otherwise a log line every few
//! seconds (bytes, rate, ETA) so container logs show that a large download is moving.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    resumed_at: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `done` bytes are already on disk (a resumed download); `total` is the full size if known.
    pub(crate) fn start(label: &str, total: Option<u64>, done: u64) -> Self {
        let now = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar.set_position(done);
            bar.reset_eta();
            bar
        });
        if bar.is_none() {
            tracing::info!(
                "downloading {label}: {} of {}{}",
                mib(done),
                total.map_or_else(|| "unknown size".to_string(), mib),
                if done > 0 { " (resuming)" } else { "" }
            );
        }
        Progress {
            label: label.to_string(),
            total,
            done,
            resumed_at: done,
            started: now,
            last_log: now,
            bar,
        }
    }

    pub(crate) fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!("downloading {}: {}", self.label, self.status_line());
            }
            None => {}
        }
    }

    pub(crate) fn finish(self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => tracing::info!("downloaded {}: {}", self.label, mib(self.done)),
        }
    }

    /// `120.0 MiB of 338.0 MiB (35%), 11.2 MiB/s, ETA 19s`.
    fn status_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.done - self.resumed_at) as f64 / secs;
        match self.total {
            Some(total) if total > 0 => {
                let left = total.saturating_sub(self.done) as f64;
                let eta = if rate > 0.0 {
                    format!("{:.0}s", left / rate)
                } else {
                    "unknown".into()
                };
                format!(
                    "{} of {} ({:.0}%), {}/s, ETA {eta}",
                    mib(self.done),
                    mib(total),
                    self.done as f64 * 100.0 / total as f64,
                    mib(rate as u64)
                )
            }
            _ => format!("{}, {}/s", mib(self.done), mib(rate as u64)),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_carry_bytes_rate_and_eta() {
        let mut p = Progress::start("ViT-B-32::openai visual.onnx", Some(4 << 20), 1 << 20);
        p.advance(1 << 20);
        let line = p.status_line();
        assert!(line.starts_with("2.0 MiB of 4.0 MiB (50%), "), "{line}");
        assert!(line.contains("/s, ETA "), "{line}");
        let p = Progress::start("x", None, 0);
        assert!(p.status_line().starts_with("0.0 MiB, "));
        p.finish();
    }
}
