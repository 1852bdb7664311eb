//! A run's report: JSON (`--json`) or a plain-text table.

use super::inputs::{PoolSummary, Workload};
use super::record::{Latency, Summary};
use super::scrape::WorkerStats;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Report {
    /// `nats`, or the in-process baseline: `model`, `preprocess`, `engine`.
    pub mode: String,
    /// NATS runs: `request` (request/reply) or `jobs` (durable JetStream jobs).
    pub transport: Option<String>,
    pub workload: Workload,
    pub inputs: PoolSummary,
    /// Documents per request.
    pub batch_size: usize,
    /// Requests in flight at once (fixed-concurrency runs).
    pub concurrency: Option<usize>,
    /// Requests started per second (fixed-rate runs).
    pub rate: Option<f64>,
    /// Thread settings of an in-process run.
    pub threads: Option<String>,
    /// Durable runs: most messages seen in the jobs stream.
    pub stream_max_messages: Option<u64>,
    #[serde(flatten)]
    pub summary: Summary,
    /// The worker's side (from `/metrics`; in process, from the process's own registry).
    pub worker: Option<WorkerStats>,
}

fn latency_row(out: &mut String, label: &str, l: &Latency) {
    let _ = writeln!(
        out,
        "  {label:<22} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        l.count, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
}

impl Report {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub(crate) fn table(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let how = match (self.concurrency, self.rate) {
            (_, Some(r)) => format!("{r} requests/s"),
            (Some(c), None) => format!("concurrency {c}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} {}: {} workload ({} texts, {} images of {} bytes on average), {} docs per request, {how}",
            self.mode,
            self.transport.as_deref().unwrap_or(""),
            self.workload.as_str(),
            self.inputs.texts,
            self.inputs.images,
            self.inputs.image_bytes,
            self.batch_size
        );
        if let Some(t) = &self.threads {
            let _ = writeln!(out, "threads: {t}");
        }
        let _ = writeln!(
            out,
            "throughput: {:.2} docs/s, {:.2} requests/s over {:.1} s",
            s.docs_per_s, s.requests_per_s, s.wall_s
        );
        let _ = writeln!(
            out,
            "requests: {} ({} ok, {} failed)   documents: {} ({} ok, {} failed)",
            s.requests.total,
            s.requests.ok,
            s.requests.failed,
            s.documents.total,
            s.documents.ok,
            s.documents.failed
        );
        for (code, n) in &s.documents.by_error {
            let _ = writeln!(out, "  failed documents, {code}: {n}");
        }
        let _ = writeln!(
            out,
            "latency (ms)             {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "mean", "p50", "p90", "p99", "max"
        );
        latency_row(&mut out, "ok", &s.latency_ok);
        for (code, l) in &s.latency_failed {
            latency_row(&mut out, code, l);
        }
        if let Some(m) = self.stream_max_messages {
            let _ = writeln!(out, "jobs stream: at most {m} messages waiting");
        }
        if s.timeline.len() > 1 {
            let rates: Vec<String> = s.timeline.iter().map(|t| t.docs_ok.to_string()).collect();
            let _ = writeln!(out, "docs ok per second: {}", rates.join(" "));
        }
        if let Some(w) = &self.worker {
            worker_table(&mut out, w);
        }
        out
    }
}

fn worker_table(out: &mut String, w: &WorkerStats) {
    let _ = writeln!(
        out,
        "worker    {:>8} {:>8} {:>10} {:>13} {:>12} {:>13} {:>12}",
        "docs",
        "batches",
        "mean batch",
        "preprocess/doc",
        "wait/doc",
        "inference/batch",
        "inference/doc"
    );
    for (modality, st) in &w.stages {
        let _ = writeln!(
            out,
            "  {modality:<7} {:>8} {:>8} {:>10.1} {:>11.2}ms {:>10.2}ms {:>13.2}ms {:>10.2}ms",
            st.docs,
            st.batches,
            st.mean_batch,
            st.preprocess_ms_per_doc,
            st.queue_wait_ms_per_doc,
            st.inference_ms_per_batch,
            st.inference_ms_per_doc
        );
        let sizes: Vec<String> = st
            .batch_sizes
            .iter()
            .map(|b| format!("<={}: {}", b.le, b.batches))
            .collect();
        let _ = writeln!(out, "    minibatch sizes: {}", sizes.join(", "));
    }
    for (transport, ms) in &w.request_ms_mean {
        let _ = writeln!(out, "  {transport}: {ms:.2} ms per request in the worker");
    }
    for (transport, ms) in &w.publish_ms_mean {
        let _ = writeln!(out, "  {transport}: {ms:.2} ms to publish an answer");
    }
    for (reason, n) in &w.rejections {
        let _ = writeln!(out, "  refused ({reason}): {n}");
    }
}
