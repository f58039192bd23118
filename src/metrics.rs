//! Prometheus metrics, counted where things happen: the consumer records each outcome from
//! the verdict the script returned (so a refused ack is not a success), each fetch's batch and
//! each job's wait (measured by the broker's clock in `fetch.lua`), each heartbeat's answer;
//! the watchdog counts reconnects. Python adds only the event loop's lag, once a second.
//!
//! Counting is atomics on structures resolved once per job at fetch (its task's entry), with
//! no lock on the path from outcome to counter except the consumer's own in-flight map, which
//! it takes anyway. Nothing is counted until [`Metrics`] is enabled on the engine, so a worker
//! without a metrics port pays nothing. [`render`] writes the Prometheus text format; the
//! gauges that need Redis (jobs per state, limiters) are read at scrape time by the server in
//! `crate::py::metrics`, cached for a second.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Seconds: job run times and waits, from a millisecond to ten minutes.
const TIME_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 600.0,
];
/// Jobs per fetch.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// How a run ended, as `asyncq_jobs_total{outcome}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the task returned.
    Succeeded,
    /// The task raised on its last attempt: dead-lettered.
    Failed,
    /// The task raised and a retry is scheduled.
    Retried,
    /// Dead-lettered without a run to fail: the payload could not be run (poison: bad
    /// payload, unknown task, bad signature, oversized).
    Dead,
    Cancelled,
    /// Handed back unrun or snoozed: the attempt does not count.
    Released,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::Succeeded,
    Outcome::Failed,
    Outcome::Retried,
    Outcome::Dead,
    Outcome::Cancelled,
    Outcome::Released,
];

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        }
    }
}

/// A cumulative histogram of fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then +Inf; each counts observations up to its bound (not cumulative
    /// until rendered).
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in millionths.
    sum_micro: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let at = self.bounds.partition_point(|b| *b < value);
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        let micro = (value.max(0.0) * 1e6) as u64;
        self.sum_micro.fetch_add(micro, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// One task's counters on one queue.
pub struct TaskMetrics {
    outcomes: [AtomicU64; 6],
    duration: Histogram,
}

impl TaskMetrics {
    fn new() -> TaskMetrics {
        TaskMetrics {
            outcomes: Default::default(),
            duration: Histogram::new(&TIME_BUCKETS),
        }
    }

    /// A run ended `outcome`, after `ran_s` seconds of execution (None: it did not run, as for
    /// a poisoned or handed-back job).
    pub fn ended(&self, outcome: Outcome, ran_s: Option<f64>) {
        let at = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[at].fetch_add(1, Ordering::Relaxed);
        if let Some(s) = ran_s {
            self.duration.observe(s);
        }
    }
}

/// One queue's counters (a partition is a queue of its own).
pub struct QueueMetrics {
    tasks: RwLock<BTreeMap<String, Arc<TaskMetrics>>>,
    wait: Histogram,
    batches: Histogram,
    pub in_flight: AtomicI64,
    pub renewed: AtomicU64,
    pub lost: AtomicU64,
}

impl QueueMetrics {
    fn new() -> QueueMetrics {
        QueueMetrics {
            tasks: RwLock::default(),
            wait: Histogram::new(&TIME_BUCKETS),
            batches: Histogram::new(&BATCH_BUCKETS),
            in_flight: AtomicI64::new(0),
            renewed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    /// The entry of task `name` (made on first use).
    pub fn task(&self, name: &str) -> Arc<TaskMetrics> {
        if let Some(t) = read(&self.tasks).get(name) {
            return t.clone();
        }
        let mut tasks = self.tasks.write().unwrap_or_else(|e| e.into_inner());
        tasks
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(TaskMetrics::new()))
            .clone()
    }

    /// A fetch leased `jobs` jobs, which had waited `waits_ms` each.
    pub fn fetched(&self, waits_ms: impl Iterator<Item = u64>) {
        let mut n = 0;
        for ms in waits_ms {
            self.wait.observe(ms as f64 / 1000.0);
            n += 1;
        }
        if n > 0 {
            self.batches.observe(f64::from(n));
        }
    }
}

/// Every counter of one engine (one `App` in a process).
#[derive(Default)]
pub struct Metrics {
    queues: RwLock<BTreeMap<String, Arc<QueueMetrics>>>,
    /// The event loop's lag as Python last measured it, in µs.
    pub loop_lag_us: AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// The entry of queue `name` (made on first use).
    pub fn queue(&self, name: &str) -> Arc<QueueMetrics> {
        if let Some(q) = read(&self.queues).get(name) {
            return q.clone();
        }
        let mut queues = self.queues.write().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(QueueMetrics::new()))
            .clone()
    }

    pub fn queue_names(&self) -> Vec<String> {
        read(&self.queues).keys().cloned().collect()
    }
}

/// The labels naming a queue: `queue="orders"`, and `partition="3"` for a partition
/// (`orders#3`), so series sum up per logical queue.
pub fn queue_labels(name: &str) -> String {
    match name.split_once('#') {
        Some((q, p)) => format!("queue=\"{}\",partition=\"{}\"", label(q), label(p)),
        None => format!("queue=\"{}\"", label(name)),
    }
}

/// A label value, escaped as the text format wants.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The counters of `m` in the Prometheus text format (version 0.0.4), one family at a time;
/// `reconnects` is the process's count of broker connections replaced.
pub fn render(m: &Metrics, reconnects: u64, out: &mut String) {
    let queues: Vec<(String, Arc<QueueMetrics>)> = read(&m.queues)
        .iter()
        .map(|(k, v)| (queue_labels(k), v.clone()))
        .collect();
    let tasks_of = |q: &QueueMetrics| -> Vec<(String, Arc<TaskMetrics>)> {
        read(&q.tasks)
            .iter()
            .map(|(k, v)| (label(k), v.clone()))
            .collect()
    };

    header(
        out,
        "asyncq_jobs_total",
        "counter",
        "Runs ended, by outcome (from the broker's verdicts).",
    );
    for (qn, q) in &queues {
        for (tn, t) in tasks_of(q) {
            for (i, o) in OUTCOMES.iter().enumerate() {
                let n = t.outcomes[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "asyncq_jobs_total{{{qn},task=\"{tn}\",outcome=\"{}\"}} {n}",
                    o.name()
                );
            }
        }
    }
    header(
        out,
        "asyncq_job_duration_seconds",
        "histogram",
        "Execution time of runs, by task.",
    );
    for (qn, q) in &queues {
        for (tn, t) in tasks_of(q) {
            let labels = format!("{qn},task=\"{tn}\"");
            t.duration
                .render(out, "asyncq_job_duration_seconds", &labels);
        }
    }
    header(
        out,
        "asyncq_job_wait_seconds",
        "histogram",
        "Time from enqueue (or due time) to lease, by the broker's clock.",
    );
    for (qn, q) in &queues {
        q.wait.render(out, "asyncq_job_wait_seconds", qn);
    }
    header(
        out,
        "asyncq_fetch_batch_size",
        "histogram",
        "Jobs leased per fetch.",
    );
    for (qn, q) in &queues {
        q.batches.render(out, "asyncq_fetch_batch_size", qn);
    }
    header(
        out,
        "asyncq_jobs_in_flight",
        "gauge",
        "Jobs leased by this process and not yet settled.",
    );
    for (qn, q) in &queues {
        let n = q.in_flight.load(Ordering::Relaxed).max(0);
        let _ = writeln!(out, "asyncq_jobs_in_flight{{{qn}}} {n}");
    }
    header(
        out,
        "asyncq_lease_renewals_total",
        "counter",
        "Leases extended by heartbeats.",
    );
    for (qn, q) in &queues {
        let n = q.renewed.load(Ordering::Relaxed);
        let _ = writeln!(out, "asyncq_lease_renewals_total{{{qn}}} {n}");
    }
    header(
        out,
        "asyncq_leases_lost_total",
        "counter",
        "Leases found taken over or gone at a heartbeat (the job may run elsewhere).",
    );
    for (qn, q) in &queues {
        let n = q.lost.load(Ordering::Relaxed);
        let _ = writeln!(out, "asyncq_leases_lost_total{{{qn}}} {n}");
    }
    header(
        out,
        "asyncq_reconnects_total",
        "counter",
        "Broker connections replaced (silent, broken, or a failover).",
    );
    let _ = writeln!(out, "asyncq_reconnects_total {reconnects}");
    header(
        out,
        "asyncq_event_loop_lag_seconds",
        "gauge",
        "How late the worker's asyncio loop ran a timer, last measured.",
    );
    let lag = m.loop_lag_us.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "asyncq_event_loop_lag_seconds {lag}");
}

// ---- Serving ------------------------------------------------------------------------------

/// How long the gauges read from Redis at a scrape are reused.
const GAUGE_CACHE: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest time a scraper may take to send its request.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a scrape returns: the engine's counters, and gauges read from the broker for the
/// queues this process serves.
pub struct Exporter {
    engine: crate::engine::Engine,
    queues: Vec<String>,
    gauges: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
}

impl Exporter {
    /// Enables the engine's metrics (consumers started after this count).
    pub fn new(engine: crate::engine::Engine, queues: Vec<String>) -> Arc<Exporter> {
        engine.enable_metrics();
        Arc::new(Exporter {
            engine,
            queues,
            gauges: tokio::sync::Mutex::new(None),
        })
    }

    /// The whole scrape, in the text format.
    pub async fn scrape(&self) -> String {
        let mut out = String::new();
        render(
            &self.engine.enable_metrics(),
            crate::broker::reconnects(),
            &mut out,
        );
        let mut cached = self.gauges.lock().await;
        match &*cached {
            Some((at, text)) if at.elapsed() < GAUGE_CACHE => out.push_str(text),
            _ => {
                let text = self.read_gauges().await;
                out.push_str(&text);
                *cached = Some((std::time::Instant::now(), text));
            }
        }
        out
    }

    /// Jobs per state and limiter occupancy of each served queue: one counts call and one
    /// limits call per queue (partition). `asyncq_broker_up` says whether they could be read.
    async fn read_gauges(&self) -> String {
        let broker = self.engine.broker();
        let mut jobs = String::new();
        let mut paused = String::new();
        let mut limits = String::new();
        let mut up = 1;
        for q in &self.queues {
            let ql = queue_labels(q);
            match broker.counts(q).await {
                Ok(c) => {
                    for (state, n) in [
                        ("queued", c.queued),
                        ("scheduled", c.scheduled),
                        ("running", c.running),
                        ("dead", c.dead),
                    ] {
                        let _ = writeln!(jobs, "asyncq_queue_jobs{{{ql},state=\"{state}\"}} {n}");
                    }
                    let _ = writeln!(paused, "asyncq_queue_paused{{{ql}}} {}", u8::from(c.paused));
                }
                Err(_) => up = 0,
            }
            match broker.limits(q).await {
                Ok(rows) => {
                    for r in rows {
                        let fl = format!("{ql},family=\"{}\"", label(&r.family));
                        let _ = writeln!(limits, "asyncq_limiter_running{{{fl}}} {}", r.running);
                        let _ = writeln!(limits, "asyncq_limiter_waiting{{{fl}}} {}", r.waiting);
                    }
                }
                Err(_) => up = 0,
            }
        }
        let mut out = String::new();
        header(
            &mut out,
            "asyncq_queue_jobs",
            "gauge",
            "Jobs per state in the broker, per served queue.",
        );
        out.push_str(&jobs);
        header(
            &mut out,
            "asyncq_queue_paused",
            "gauge",
            "1 while the queue is paused.",
        );
        out.push_str(&paused);
        header(
            &mut out,
            "asyncq_limiter_running",
            "gauge",
            "Jobs running under a limiter family (without a key).",
        );
        header(
            &mut out,
            "asyncq_limiter_waiting",
            "gauge",
            "Groups waiting on a limiter family: jobs held by a rate or concurrency limit.",
        );
        out.push_str(&limits);
        header(
            &mut out,
            "asyncq_broker_up",
            "gauge",
            "1 when the last read of the broker's gauges succeeded.",
        );
        let _ = writeln!(out, "asyncq_broker_up {up}");
        out
    }
}

/// Serve `GET /metrics` (and `/healthz`) on `listener` until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((sock, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, answer(sock, &exporter)).await;
        });
    }
}

/// Answer one HTTP/1.x request and close the connection.
async fn answer(mut sock: tokio::net::TcpStream, exporter: &Exporter) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = tokio::time::timeout(REQUEST_TIMEOUT, sock.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            exporter.scrape().await,
        ),
        ("GET" | "HEAD", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        sock.write_all(body.as_bytes()).await?;
    }
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::new(&BATCH_BUCKETS);
        for v in [1.0, 3.0, 3.0, 500.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "q=\"a\"");
        assert!(out.contains("x_bucket{q=\"a\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{q=\"a\",le=\"2\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{q=\"a\",le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{q=\"a\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{q=\"a\"} 507\n") && out.contains("x_count{q=\"a\"} 4\n"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
