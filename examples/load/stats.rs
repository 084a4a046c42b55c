//! Counters, latency histograms, and the per-second and final reports.
//!
//! Producers and consumers update [`Stats`] once per batch (one atomic add per counter, one
//! lock of the latency histogram per read wake-up), never once per message. The [`Reporter`]
//! samples it every second: rates are counter differences divided by the exact interval, and
//! latency percentiles come from the histogram of that interval, which is then merged into the
//! whole-run histogram and cleared.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latencies are recorded in nanoseconds, up to this (100 s); longer ones count as this.
const MAX_LATENCY_NS: u64 = 100_000_000_000;

/// Counters and the latency histogram that every producer and consumer task shares.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Messages published.
    pub(crate) sent: AtomicU64,
    /// Queue copies the published messages should make (fanout: one per queue; topic: only
    /// the messages whose key matches). The run with `--pmessages` ends once this many arrived.
    pub(crate) routed: AtomicU64,
    /// Publisher confirms received (`basic.ack`, counting each message of a `multiple`).
    pub(crate) confirmed: AtomicU64,
    /// Negative publisher confirms (`basic.nack`).
    pub(crate) nacked: AtomicU64,
    /// Messages the broker returned as unroutable (`-f mandatory`).
    pub(crate) returned: AtomicU64,
    /// Messages delivered to consumers.
    pub(crate) received: AtomicU64,
    /// Producers currently blocked by `connection.blocked`.
    pub(crate) blocked_now: AtomicU64,
    /// Total time producers spent blocked, in nanoseconds (summed over producers).
    pub(crate) blocked_ns: AtomicU64,
    /// Producers that sent all their `--pmessages` (and had them confirmed).
    pub(crate) producers_done: AtomicU64,
    /// Consumers that received all their `--cmessages`.
    pub(crate) consumers_done: AtomicU64,
    /// Latencies since the reporter's last sample.
    latency: Mutex<Histogram<u64>>,
    /// Errors that ended a connection; any of them makes the exit status non-zero.
    errors: Mutex<Vec<String>>,
}

/// A histogram with the bounds and precision the tool uses everywhere.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that are valid, so this cannot fail; fall back to an
    // auto-resizing histogram all the same rather than panic.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
}

impl Stats {
    /// Zeroed counters.
    pub(crate) fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            received: AtomicU64::new(0),
            blocked_now: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
            producers_done: AtomicU64::new(0),
            consumers_done: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Records a batch of latencies (nanoseconds) under one lock.
    pub(crate) fn record_latencies(&self, latencies_ns: &[u64]) {
        if latencies_ns.is_empty() {
            return;
        }
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for &ns in latencies_ns {
            h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
        }
    }

    /// Notes an error that ended a connection.
    pub(crate) fn error(&self, message: String) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    /// The errors noted so far.
    pub(crate) fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Relaxed),
            confirmed: self.confirmed.load(Relaxed),
            nacked: self.nacked.load(Relaxed),
            returned: self.returned.load(Relaxed),
            received: self.received.load(Relaxed),
        }
    }

    /// Moves the interval's latencies into `into` and clears them.
    fn drain_latency(&self, into: &mut Histogram<u64>) {
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        // Same bounds on both sides, so `add` cannot fail.
        let _ = into.add(&*h);
        h.reset();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    received: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    /// Messages measured.
    pub(crate) count: u64,
    /// Mean.
    pub(crate) mean: f64,
    /// Median.
    pub(crate) p50: f64,
    /// 75th percentile.
    pub(crate) p75: f64,
    /// 95th percentile.
    pub(crate) p95: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// Maximum.
    pub(crate) max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds, in microseconds (zeros if empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1_000.0,
            p50: us(h.value_at_quantile(0.50)),
            p75: us(h.value_at_quantile(0.75)),
            p95: us(h.value_at_quantile(0.95)),
            p99: us(h.value_at_quantile(0.99)),
            max: us(h.max()),
        }
    }
}

/// One reporting interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    /// Seconds since producers started, at the end of the interval.
    pub(crate) time_s: f64,
    /// Published messages per second.
    pub(crate) sent_rate: f64,
    /// Confirms per second.
    pub(crate) confirmed_rate: f64,
    /// Nacks per second.
    pub(crate) nacked_rate: f64,
    /// Deliveries per second.
    pub(crate) received_rate: f64,
    /// Producers blocked by the broker at the end of the interval.
    pub(crate) blocked: u64,
    /// Latency of the messages received in the interval.
    pub(crate) latency_us: Percentiles,
}

impl Sample {
    /// The one-line human form.
    pub(crate) fn line(&self, confirms: bool) -> String {
        let mut s = format!(
            "time {:7.3}s  sent {:>8.0} msg/s",
            self.time_s, self.sent_rate
        );
        if confirms {
            s.push_str(&format!("  confirmed {:>8.0} msg/s", self.confirmed_rate));
            if self.nacked_rate > 0.0 {
                s.push_str(&format!("  nacked {:>6.0} msg/s", self.nacked_rate));
            }
        }
        s.push_str(&format!("  received {:>8.0} msg/s", self.received_rate));
        let l = &self.latency_us;
        if l.count > 0 {
            s.push_str(&format!(
                "  latency µs p50 {:.0} p75 {:.0} p95 {:.0} p99 {:.0} max {:.0}",
                l.p50, l.p75, l.p95, l.p99, l.max
            ));
        }
        if self.blocked > 0 {
            s.push_str(&format!("  BLOCKED ({} producers)", self.blocked));
        }
        s
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// What ran (flags, in a form stable enough to compare runs).
    pub(crate) scenario: serde_json::Value,
    /// Seconds from the producers' start to the end.
    pub(crate) duration_s: f64,
    /// Messages published.
    pub(crate) sent: u64,
    /// Confirms.
    pub(crate) confirmed: u64,
    /// Nacks.
    pub(crate) nacked: u64,
    /// Returned (unroutable, mandatory) messages.
    pub(crate) returned: u64,
    /// Deliveries.
    pub(crate) received: u64,
    /// Average publish rate.
    pub(crate) sent_rate: f64,
    /// Average confirm rate.
    pub(crate) confirmed_rate: f64,
    /// Average delivery rate.
    pub(crate) received_rate: f64,
    /// Seconds producers spent blocked (summed over producers).
    pub(crate) blocked_s: f64,
    /// Whole-run latency.
    pub(crate) latency_us: Percentiles,
    /// The per-second samples.
    pub(crate) samples: Vec<Sample>,
    /// Errors from the broker or the network; non-empty means exit status 1.
    pub(crate) errors: Vec<String>,
}

impl Summary {
    /// The multi-line human form.
    pub(crate) fn text(&self) -> String {
        let l = &self.latency_us;
        let mut s = format!(
            "summary: {:.3}s, sent {} ({:.0} msg/s), confirmed {} ({:.0} msg/s), nacked {}, \
             returned {}, received {} ({:.0} msg/s)\n",
            self.duration_s,
            self.sent,
            self.sent_rate,
            self.confirmed,
            self.confirmed_rate,
            self.nacked,
            self.returned,
            self.received,
            self.received_rate,
        );
        if l.count > 0 {
            s.push_str(&format!(
                "latency µs over {} messages: mean {:.0}, p50 {:.0}, p75 {:.0}, p95 {:.0}, \
                 p99 {:.0}, max {:.0}\n",
                l.count, l.mean, l.p50, l.p75, l.p95, l.p99, l.max
            ));
        }
        if self.blocked_s > 0.0 {
            s.push_str(&format!(
                "producers were blocked by the broker for {:.3}s\n",
                self.blocked_s
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    }
}

/// Turns the shared counters into per-second samples and the final summary.
#[derive(Debug)]
pub(crate) struct Reporter {
    last: Counts,
    last_elapsed: Duration,
    interval: Histogram<u64>,
    whole: Histogram<u64>,
    samples: Vec<Sample>,
}

impl Reporter {
    /// A reporter whose clock starts now (elapsed 0, counters as they are).
    pub(crate) fn new(stats: &Stats) -> Self {
        Self {
            last: stats.counts(),
            last_elapsed: Duration::ZERO,
            interval: new_histogram(),
            whole: new_histogram(),
            samples: Vec::new(),
        }
    }

    /// Closes an interval at `elapsed` since the start and returns its sample.
    pub(crate) fn sample(&mut self, stats: &Stats, elapsed: Duration) -> Sample {
        let now = stats.counts();
        stats.drain_latency(&mut self.interval);
        let secs = elapsed.saturating_sub(self.last_elapsed).as_secs_f64();
        let rate = |a: u64, b: u64| {
            if secs > 0.0 {
                a.saturating_sub(b) as f64 / secs
            } else {
                0.0
            }
        };
        let sample = Sample {
            time_s: elapsed.as_secs_f64(),
            sent_rate: rate(now.sent, self.last.sent),
            confirmed_rate: rate(now.confirmed, self.last.confirmed),
            nacked_rate: rate(now.nacked, self.last.nacked),
            received_rate: rate(now.received, self.last.received),
            blocked: stats.blocked_now.load(Relaxed),
            latency_us: Percentiles::of(&self.interval),
        };
        let _ = self.whole.add(&self.interval);
        self.interval.reset();
        self.last = now;
        self.last_elapsed = elapsed;
        self.samples.push(sample);
        sample
    }

    /// The summary of the run, `elapsed` long (latencies not yet sampled are included).
    pub(crate) fn summary(
        mut self,
        stats: &Stats,
        elapsed: Duration,
        scenario: serde_json::Value,
    ) -> Summary {
        stats.drain_latency(&mut self.whole);
        let c = stats.counts();
        let secs = elapsed.as_secs_f64();
        let avg = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Summary {
            scenario,
            duration_s: secs,
            sent: c.sent,
            confirmed: c.confirmed,
            nacked: c.nacked,
            returned: c.returned,
            received: c.received,
            sent_rate: avg(c.sent),
            confirmed_rate: avg(c.confirmed),
            received_rate: avg(c.received),
            blocked_s: stats.blocked_ns.load(Relaxed) as f64 / 1e9,
            latency_us: Percentiles::of(&self.whole),
            samples: self.samples,
            errors: stats.errors(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        // 1..=100 µs, one each.
        for us in 1..=100u64 {
            h.record(us * 1_000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 100);
        // Three significant figures: within 0.1%.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(p.p50, 50.0), "{p:?}");
        assert!(close(p.p75, 75.0), "{p:?}");
        assert!(close(p.p95, 95.0), "{p:?}");
        assert!(close(p.p99, 99.0), "{p:?}");
        assert!(close(p.max, 100.0), "{p:?}");
        assert!(close(p.mean, 50.5), "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let stats = Stats::new();
        stats.record_latencies(&[0, u64::MAX, 500]);
        let mut r = Reporter::new(&stats);
        let s = r.sample(&stats, Duration::from_secs(1));
        assert_eq!(s.latency_us.count, 3);
        assert!(s.latency_us.max >= 99_000_000.0);
    }

    #[test]
    fn samples_are_interval_rates_and_the_summary_is_the_whole_run() {
        let stats = Stats::new();
        let mut r = Reporter::new(&stats);

        stats.sent.fetch_add(1_000, Relaxed);
        stats.confirmed.fetch_add(900, Relaxed);
        stats.received.fetch_add(800, Relaxed);
        stats.record_latencies(&[1_000_000; 10]); // 10 × 1 ms
        let s1 = r.sample(&stats, Duration::from_millis(500));
        assert_eq!(s1.sent_rate, 2_000.0);
        assert_eq!(s1.confirmed_rate, 1_800.0);
        assert_eq!(s1.received_rate, 1_600.0);
        assert_eq!(s1.latency_us.count, 10);
        assert!((s1.latency_us.p99 - 1_000.0).abs() < 1.0);

        stats.sent.fetch_add(3_000, Relaxed);
        stats.received.fetch_add(3_000, Relaxed);
        stats.record_latencies(&[2_000_000; 30]); // 30 × 2 ms
        let s2 = r.sample(&stats, Duration::from_millis(1_500));
        assert_eq!(s2.sent_rate, 3_000.0);
        assert_eq!(s2.confirmed_rate, 0.0);
        // The interval's histogram holds only the interval's latencies.
        assert_eq!(s2.latency_us.count, 30);
        assert!((s2.latency_us.p50 - 2_000.0).abs() < 2.0);
        assert!(s2.line(true).contains("confirmed"));
        assert!(!s2.line(false).contains("confirmed"));
        assert!(s2.line(false).contains("p99 200"), "{}", s2.line(false));

        // A latency recorded after the last sample still makes the summary.
        stats.record_latencies(&[3_000_000]);
        stats.error("boom".into());
        let sum = r.summary(&stats, Duration::from_secs(2), serde_json::json!({"x": 1}));
        assert_eq!(sum.sent, 4_000);
        assert_eq!(sum.sent_rate, 2_000.0);
        assert_eq!(sum.received, 3_800);
        assert_eq!(sum.latency_us.count, 41);
        assert!((sum.latency_us.p50 - 2_000.0).abs() < 2.0);
        assert!((sum.latency_us.max - 3_000.0).abs() < 3.0);
        assert_eq!(sum.samples.len(), 2);
        assert!(sum.text().contains("error: boom"));

        let json: serde_json::Value = serde_json::to_value(&sum).unwrap();
        assert_eq!(json["sent"], 4_000);
        assert_eq!(json["latency_us"]["count"], 41);
        assert_eq!(json["samples"][1]["sent_rate"], 3_000.0);
        assert_eq!(json["errors"][0], "boom");
        assert_eq!(json["scenario"]["x"], 1);
    }
}
