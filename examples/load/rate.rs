//! Fixed-rate publishing without a sleep per message.
//!
//! The limiter is arithmetic on a clock reading, not a timer: by time `t` (nanoseconds since
//! the limiter's origin) exactly `floor(t * rate / 1e9)` messages are due. A producer asks
//! [`RateLimiter::due`] how many it may send now, sends them as one batch in one write, and
//! then sleeps until [`RateLimiter::ready_at`] says a whole batch (about a millisecond's
//! worth, [`RateLimiter::batch`]) is due. Errors do not accumulate: each answer is computed from
//! the origin, so the long-run rate is exact whatever the timer's jitter.
//!
//! A producer that fell far behind (blocked by the broker, a full confirm window) does not
//! burst to catch up on more than [`MAX_DEBT_SECONDS`] worth of messages: the origin moves
//! forward instead ([`RateLimiter::forgive`]).

/// The most backlog, in seconds of messages, a late producer may send in a burst.
pub(crate) const MAX_DEBT_SECONDS: f64 = 1.0;

/// The shortest sleep between batches; tokio's timer has millisecond resolution.
const MIN_TICK_NS: f64 = 1_000_000.0;

/// A per-producer rate limiter. All times are nanoseconds on one monotonic clock.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    /// Messages per second.
    rate: f64,
    /// The clock reading at which `base_count` messages had been due.
    base_ns: u64,
    /// Messages due at `base_ns`.
    base_count: u64,
}

impl RateLimiter {
    /// A limiter for `rate` messages per second (must be positive and finite), starting at
    /// clock reading `now_ns` with nothing due yet.
    pub(crate) fn new(rate: f64, now_ns: u64) -> Self {
        Self {
            rate,
            base_ns: now_ns,
            base_count: 0,
        }
    }

    /// How many messages are due in total by `now_ns` (not counting what was sent).
    pub(crate) fn total_due(&self, now_ns: u64) -> u64 {
        let elapsed = now_ns.saturating_sub(self.base_ns) as f64;
        // `as` saturates; the tiny epsilon keeps exact multiples (e.g. 0.001 s at 1000/s)
        // from rounding down to one less.
        self.base_count + (elapsed * self.rate / 1e9 + 1e-6).floor() as u64
    }

    /// How many messages may be sent at `now_ns`, `sent` having been sent so far.
    pub(crate) fn due(&self, sent: u64, now_ns: u64) -> u64 {
        self.total_due(now_ns).saturating_sub(sent)
    }

    /// Moves the origin forward so that at most [`MAX_DEBT_SECONDS`] of messages are owed.
    pub(crate) fn forgive(&mut self, sent: u64, now_ns: u64) {
        let max_debt = (self.rate * MAX_DEBT_SECONDS).ceil().max(1.0) as u64;
        if self.due(sent, now_ns) > max_debt {
            self.base_ns = now_ns;
            self.base_count = sent + max_debt;
        }
    }

    /// Messages per batch: about one timer tick's worth, at least one.
    pub(crate) fn batch(&self) -> u64 {
        (self.rate * MIN_TICK_NS / 1e9).round().max(1.0) as u64
    }

    /// The clock reading at which `sent + self.batch()` messages are due: when to wake up.
    pub(crate) fn ready_at(&self, sent: u64) -> u64 {
        let target = (sent + self.batch()).saturating_sub(self.base_count);
        let ns = (target as f64 * 1e9 / self.rate).ceil();
        self.base_ns.saturating_add(ns as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn due_follows_the_clock_exactly() {
        let r = RateLimiter::new(10_000.0, 5 * SEC);
        assert_eq!(r.due(0, 5 * SEC), 0);
        assert_eq!(r.due(0, 5 * SEC + 99_999), 0);
        assert_eq!(r.due(0, 5 * SEC + 100_000), 1);
        assert_eq!(r.due(0, 6 * SEC), 10_000);
        assert_eq!(r.due(4_000, 6 * SEC), 6_000);
        // Sending more than due (never happens) is not an underflow.
        assert_eq!(r.due(20_000, 6 * SEC), 0);
        // Before the origin nothing is due.
        assert_eq!(r.due(0, 0), 0);
    }

    #[test]
    fn fractional_rates() {
        let r = RateLimiter::new(0.5, 0);
        assert_eq!(r.due(0, SEC), 0);
        assert_eq!(r.due(0, 2 * SEC), 1);
        assert_eq!(r.batch(), 1);
        assert_eq!(r.ready_at(1), 4 * SEC);
    }

    #[test]
    fn batches_are_about_a_millisecond() {
        assert_eq!(RateLimiter::new(10_000.0, 0).batch(), 10);
        assert_eq!(RateLimiter::new(100.0, 0).batch(), 1);
        assert_eq!(RateLimiter::new(1_000_000.0, 0).batch(), 1_000);
    }

    #[test]
    fn ready_at_is_when_a_batch_is_due() {
        let r = RateLimiter::new(10_000.0, SEC);
        // 10 messages take 1 ms at 10k/s.
        assert_eq!(r.ready_at(0), SEC + 1_000_000);
        assert_eq!(r.due(0, r.ready_at(0)), 10);
        assert_eq!(r.due(0, r.ready_at(0) - 1), 9);
        assert_eq!(r.ready_at(25), SEC + 3_500_000);
        assert_eq!(r.due(25, r.ready_at(25)), 10);
    }

    /// A simulated producer that wakes up late by a jittery amount each time still sends
    /// exactly the rate over the run: the limiter has no drift.
    #[test]
    fn simulated_run_is_accurate_despite_jitter() {
        let mut r = RateLimiter::new(10_000.0, 0);
        let mut now = 0u64;
        let mut sent = 0u64;
        let mut wakeups = 0u64;
        let mut jitter = 12345u64;
        while now < 10 * SEC {
            r.forgive(sent, now);
            sent += r.due(sent, now);
            // xorshift: up to 0.8 ms of lateness on every wake-up.
            jitter ^= jitter << 13;
            jitter ^= jitter >> 7;
            jitter ^= jitter << 17;
            now = r.ready_at(sent).max(now + 1) + jitter % 800_000;
            wakeups += 1;
        }
        let expected = 100_000.0;
        assert!(
            (sent as f64 - expected).abs() / expected < 0.001,
            "sent {sent}"
        );
        // Batching: far fewer wake-ups than messages.
        assert!(wakeups < 12_000, "{wakeups} wake-ups");
    }

    #[test]
    fn forgive_caps_the_burst_after_a_stall() {
        let mut r = RateLimiter::new(1_000.0, 0);
        // Stalled for 10 s without sending.
        r.forgive(0, 10 * SEC);
        assert_eq!(r.due(0, 10 * SEC), 1_000);
        // After the catch-up burst, the rate continues from the new origin.
        assert_eq!(r.due(1_000, 11 * SEC), 1_000);
        // Small debts are kept.
        let mut r = RateLimiter::new(1_000.0, 0);
        r.forgive(0, SEC / 2);
        assert_eq!(r.due(0, SEC / 2), 500);
    }
}
