//! The worker's side of a run, from its Prometheus `/metrics` scraped before and after: the
//! minibatch sizes it formed and where a document's time went (preprocessing, waiting for its
//! minibatch, inference, publishing the answer).

use std::collections::BTreeMap;
use std::time::Duration;

/// One scrape: series (name plus sorted labels) → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scrape {
    series: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// Reads the Prometheus text format (comments and malformed lines are skipped).
    pub(crate) fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match key.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (key, Vec::new()),
            };
            series.insert((name.to_string(), labels), value);
        }
        Scrape { series }
    }

    /// Fetches and parses `url` (a worker's `/metrics`).
    pub(crate) fn fetch(url: &str) -> Result<Scrape, String> {
        let body = ureq::get(url)
            .timeout(Duration::from_secs(5))
            .call()
            .map_err(|e| format!("scraping {url}: {e}"))?
            .into_string()
            .map_err(|e| format!("reading {url}: {e}"))?;
        Ok(Scrape::parse(&body))
    }

    /// One series' value (0 when absent: a counter not yet incremented).
    fn value(&self, name: &str, labels: &[(String, String)]) -> f64 {
        self.series
            .get(&(name.to_string(), labels.to_vec()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Values of the series called `name`, by the value of its label `by`, minus `before`'s.
    fn delta_by(&self, before: &Scrape, name: &str, by: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((n, labels), v) in &self.series {
            if n != name {
                continue;
            }
            let Some((_, key)) = labels.iter().find(|(k, _)| k == by) else {
                continue;
            };
            let old = before.value(n, labels);
            *out.entry(key.clone()).or_insert(0.0) += v - old;
        }
        out
    }

    /// Cumulative histogram buckets of `name` for `modality`, minus `before`'s: (le, count).
    fn buckets(&self, before: &Scrape, name: &str, modality: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(f64, String, f64)> = Vec::new();
        for ((n, labels), v) in &self.series {
            let has = |k: &str, val: &str| labels.iter().any(|(a, b)| a == k && b == val);
            if n != name || !has("modality", modality) {
                continue;
            }
            let Some((_, le)) = labels.iter().find(|(k, _)| k == "le") else {
                continue;
            };
            let old = before.value(n, labels);
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            out.push((bound, le.clone(), v - old));
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter().map(|(_, le, v)| (le, v)).collect()
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.push((
            key.trim().trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        ));
        rest = &after[end + 1..];
    }
    out.sort();
    out
}

/// Where one modality's documents spent their time in the worker, and its minibatches.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct StageSplit {
    /// Documents that went through the tower.
    pub docs: u64,
    /// Minibatches run.
    pub batches: u64,
    pub mean_batch: f64,
    pub preprocess_ms_per_doc: f64,
    pub queue_wait_ms_per_doc: f64,
    pub inference_ms_per_batch: f64,
    /// Inference time shared out over the minibatch's documents.
    pub inference_ms_per_doc: f64,
    /// Minibatches by size: `le` (upper bound of the bucket) → minibatches in it.
    pub batch_sizes: Vec<BatchBucket>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct BatchBucket {
    pub le: String,
    pub batches: u64,
}

/// What the worker's metrics say about the run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct WorkerStats {
    /// By modality (`text`, `image`).
    pub stages: BTreeMap<String, StageSplit>,
    /// Mean time to send a reply or publish a job result, by transport.
    pub publish_ms_mean: BTreeMap<String, f64>,
    /// Mean time from receiving a request to its response being ready, by transport.
    pub request_ms_mean: BTreeMap<String, f64>,
    /// Requests or documents refused, by reason.
    pub rejections: BTreeMap<String, u64>,
}

fn mean_ms(sum: &BTreeMap<String, f64>, count: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    sum.iter()
        .filter_map(|(k, s)| {
            let n = count.get(k).copied().unwrap_or(0.0);
            (n > 0.0).then(|| (k.clone(), s / n * 1e3))
        })
        .collect()
}

impl WorkerStats {
    /// The difference between two scrapes of one worker.
    pub(crate) fn between(before: &Scrape, after: &Scrape) -> WorkerStats {
        let d = |name: &str, by: &str| after.delta_by(before, name, by);
        let docs = d("clip_worker_inferences_total", "modality");
        let batches = d("clip_worker_inference_executions_total", "modality");
        let pre = mean_ms(
            &d("clip_worker_preprocess_duration_seconds_sum", "modality"),
            &d("clip_worker_preprocess_duration_seconds_count", "modality"),
        );
        let wait = mean_ms(
            &d("clip_worker_queue_wait_duration_seconds_sum", "modality"),
            &d("clip_worker_queue_wait_duration_seconds_count", "modality"),
        );
        let inference_sum = d("clip_worker_inference_duration_seconds_sum", "modality");
        let inference = mean_ms(
            &inference_sum,
            &d("clip_worker_inference_duration_seconds_count", "modality"),
        );
        let mut stages = BTreeMap::new();
        for (modality, n) in &docs {
            if *n <= 0.0 {
                continue;
            }
            let runs = batches.get(modality).copied().unwrap_or(0.0);
            let got = |m: &BTreeMap<String, f64>| m.get(modality).copied().unwrap_or(0.0);
            let mut buckets = Vec::new();
            let mut below = 0.0;
            for (le, cumulative) in after.buckets(before, "clip_worker_batch_size_bucket", modality)
            {
                let in_bucket = (cumulative - below).max(0.0);
                below = cumulative;
                if in_bucket > 0.0 {
                    buckets.push(BatchBucket {
                        le,
                        batches: in_bucket.round() as u64,
                    });
                }
            }
            stages.insert(
                modality.clone(),
                StageSplit {
                    docs: n.round() as u64,
                    batches: runs.round() as u64,
                    mean_batch: if runs > 0.0 { n / runs } else { 0.0 },
                    preprocess_ms_per_doc: got(&pre),
                    queue_wait_ms_per_doc: got(&wait),
                    inference_ms_per_batch: got(&inference),
                    inference_ms_per_doc: got(&inference_sum) * 1e3 / n,
                    batch_sizes: buckets,
                },
            );
        }
        WorkerStats {
            stages,
            publish_ms_mean: mean_ms(
                &d("clip_worker_publish_duration_seconds_sum", "transport"),
                &d("clip_worker_publish_duration_seconds_count", "transport"),
            ),
            request_ms_mean: mean_ms(
                &d("clip_worker_request_duration_seconds_sum", "transport"),
                &d("clip_worker_request_duration_seconds_count", "transport"),
            ),
            rejections: d("clip_worker_rejections_total", "reason")
                .into_iter()
                .filter(|(_, v)| *v > 0.0)
                .map(|(k, v)| (k, v.round() as u64))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP x
clip_worker_inferences_total{modality="text"} 10
clip_worker_inference_executions_total{modality="text"} 10
clip_worker_batch_size_bucket{modality="text",le="1"} 10
clip_worker_batch_size_bucket{modality="text",le="32"} 10
clip_worker_batch_size_bucket{modality="text",le="+Inf"} 10
"#;
    const AFTER: &str = r#"clip_worker_inferences_total{modality="text"} 110
clip_worker_inference_executions_total{modality="text"} 14
clip_worker_batch_size_bucket{modality="text",le="1"} 11
clip_worker_batch_size_bucket{modality="text",le="32"} 14
clip_worker_batch_size_bucket{modality="text",le="+Inf"} 14
clip_worker_preprocess_duration_seconds_sum{modality="text"} 0.1
clip_worker_preprocess_duration_seconds_count{modality="text"} 100
clip_worker_inference_duration_seconds_sum{modality="text"} 2
clip_worker_inference_duration_seconds_count{modality="text"} 4
clip_worker_rejections_total{reason="overloaded"} 3
"#;

    #[test]
    fn the_split_is_the_difference_of_two_scrapes() {
        let w = WorkerStats::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER));
        let t = &w.stages["text"];
        assert_eq!((t.docs, t.batches), (100, 4));
        assert_eq!(t.mean_batch, 25.0);
        assert!((t.preprocess_ms_per_doc - 1.0).abs() < 1e-9);
        assert_eq!(t.inference_ms_per_batch, 500.0);
        assert_eq!(t.inference_ms_per_doc, 20.0);
        let sizes: Vec<(&str, u64)> = t
            .batch_sizes
            .iter()
            .map(|b| (b.le.as_str(), b.batches))
            .collect();
        assert_eq!(sizes, [("1", 1), ("32", 3)]);
        assert_eq!(w.rejections["overloaded"], 3);
    }
}
