//! Liveness and readiness: what `/healthz` and `/readyz` answer.
//!
//! Liveness is "the process and its pipeline threads are running"; readiness adds "the model
//! answered a real inference, NATS is connected, the endpoints are subscribed and the worker is
//! not draining". The serve command flips the flags as it starts and stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

type Check = Box<dyn Fn() -> bool + Send + Sync>;

#[derive(Default)]
pub(crate) struct Health {
    model_warm: AtomicBool,
    subscribed: AtomicBool,
    draining: AtomicBool,
    pipeline: RwLock<Option<Check>>,
    nats: RwLock<Option<Check>>,
}

/// One probe's answer: whether it passes, and a JSON body that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeReport {
    pub ok: bool,
    pub body: String,
}

impl Health {
    /// Liveness follows this check (the pipeline threads are alive); before it is set the
    /// worker is still starting and not live.
    pub(crate) fn set_pipeline_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        if let Ok(mut c) = self.pipeline.write() {
            *c = Some(Box::new(check));
        }
    }

    /// Readiness requires this check (the NATS connection is up).
    pub(crate) fn set_nats_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        if let Ok(mut c) = self.nats.write() {
            *c = Some(Box::new(check));
        }
    }

    /// The model answered a warm-up inference on every tower.
    pub(crate) fn set_model_warm(&self) {
        self.model_warm.store(true, Ordering::SeqCst);
    }

    /// Every endpoint and consumer this worker serves is subscribed.
    pub(crate) fn set_subscribed(&self) {
        self.subscribed.store(true, Ordering::SeqCst);
    }

    /// Shutdown began: not ready from now on.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn pipeline_alive(&self) -> bool {
        run(&self.pipeline)
    }

    pub(crate) fn liveness(&self) -> ProbeReport {
        let alive = self.pipeline_alive();
        ProbeReport {
            ok: alive,
            body: format!("{{\"live\":{alive},\"checks\":{{\"pipeline_threads\":{alive}}}}}\n"),
        }
    }

    pub(crate) fn readiness(&self) -> ProbeReport {
        let checks = [
            ("pipeline_threads", self.pipeline_alive()),
            ("model_warm", self.model_warm.load(Ordering::SeqCst)),
            ("nats_connected", run(&self.nats)),
            ("subscribed", self.subscribed.load(Ordering::SeqCst)),
            ("not_draining", !self.draining.load(Ordering::SeqCst)),
        ];
        let ok = checks.iter().all(|(_, passed)| *passed);
        let fields: Vec<String> = checks
            .iter()
            .map(|(name, passed)| format!("\"{name}\":{passed}"))
            .collect();
        ProbeReport {
            ok,
            body: format!("{{\"ready\":{ok},\"checks\":{{{}}}}}\n", fields.join(",")),
        }
    }
}

fn run(check: &RwLock<Option<Check>>) -> bool {
    check
        .read()
        .map(|c| c.as_ref().is_some_and(|f| f()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_not_after_draining() {
        let h = Health::default();
        assert!(!h.liveness().ok, "not live before the pipeline runs");
        h.set_pipeline_check(|| true);
        assert!(h.liveness().ok);
        h.set_nats_check(|| true);
        h.set_subscribed();
        let r = h.readiness();
        assert!(!r.ok, "not ready before the warm-up inference");
        assert!(r.body.contains("\"model_warm\":false"), "{}", r.body);
        h.set_model_warm();
        assert!(h.readiness().ok, "{}", h.readiness().body);
        h.set_nats_check(|| false);
        assert!(!h.readiness().ok, "not ready while NATS is down");
        h.set_nats_check(|| true);
        h.set_draining();
        let r = h.readiness();
        assert!(!r.ok);
        assert!(r.body.contains("\"not_draining\":false"), "{}", r.body);
        assert!(h.liveness().ok, "draining is still alive");
    }
}
