//! When each send is due.
//!
//! *Closed loop*: a sender sends as fast as the system lets it; each latency counts from the
//! moment the send was made. A system that stalls slows the sender down with it, so the stall
//! shows as one slow sample (coordinated omission).
//!
//! *Open loop*: sends are scheduled at a fixed rate from the start, send `i` at
//! `start + i / rate`, whatever happened before; each latency counts from the send's
//! *intended* time. After a stall the sender is behind its schedule and sends what is due at
//! once, and every send that the stall delayed carries the delay in its latency, as the users
//! of a real fleet (who do not wait for each other) would see it.

use std::time::Duration;

use tokio::time::Instant;

/// Hands out send times, open or closed loop.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    /// Seconds between sends (open loop), or none (closed loop).
    interval: Option<f64>,
    next: u64,
}

impl Pacer {
    /// Open loop at `rate` sends per second from `start`, or closed loop when `rate` is `None`
    /// (or not positive).
    pub fn new(start: Instant, rate: Option<f64>) -> Pacer {
        Pacer { start, interval: rate.filter(|r| *r > 0.0 && r.is_finite()).map(|r| 1.0 / r), next: 0 }
    }

    /// The time send `i` is scheduled for (open loop); `None` in closed loop.
    pub fn scheduled(&self, i: u64) -> Option<Instant> {
        self.interval.map(|s| self.start + Duration::from_secs_f64(i as f64 * s))
    }

    /// Waits until the next send is due and returns the time latency counts from: its
    /// scheduled time in open loop (in the past when the sender is behind), now in closed loop.
    pub async fn next(&mut self) -> Instant {
        let due = self.scheduled(self.next);
        self.next += 1;
        match due {
            Some(due) => {
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
                due
            }
            None => Instant::now(),
        }
    }

    /// Sends handed out so far.
    #[cfg(test)]
    pub fn sent(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Open-loop sends are due at exact multiples of the interval from the start, and the
    /// pacer waits for each; closed loop does not wait.
    #[tokio::test(start_paused = true)]
    async fn open_loop_sends_on_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Some(1000.0));
        for i in 0..10u64 {
            let due = pacer.next().await;
            assert_eq!(due, start + Duration::from_millis(i));
            assert_eq!(Instant::now(), due, "the pacer waited until send {i} was due");
        }
        let mut closed = Pacer::new(Instant::now(), None);
        let before = Instant::now();
        for _ in 0..1000 {
            closed.next().await;
        }
        assert_eq!(Instant::now(), before, "closed loop never waits");
        assert_eq!(closed.scheduled(5), None);
        assert_eq!(Pacer::new(start, Some(0.0)).scheduled(1), None, "rate 0 is closed loop");
    }

    /// Over one second at 10,000 sends/s, the pacer hands out 10,000 sends (the schedule does
    /// not drift with rounding).
    #[tokio::test(start_paused = true)]
    async fn open_loop_rate_does_not_drift() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, Some(10_000.0));
        while pacer.next().await < start + Duration::from_secs(1) {}
        assert_eq!(pacer.sent(), 10_001, "sends 0..=10,000 are due within [0 s, 1 s]");
    }

    /// Latencies of a system that answers in 1 ms but stalls for 500 ms once, sent at 100/s:
    /// the open loop charges the stall to every send it delayed (the 50-odd sends due during
    /// it and while catching up), while the closed loop sees a single slow send (coordinated
    /// omission). (Paused tokio time moves in whole milliseconds.)
    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_what_a_stall_delays() {
        async fn run(rate: Option<f64>) -> Vec<Duration> {
            let mut pacer = Pacer::new(Instant::now(), rate);
            let mut latencies = Vec::new();
            for i in 0..200u64 {
                let from = pacer.next().await;
                let service = if i == 20 { Duration::from_millis(500) } else { Duration::from_millis(1) };
                tokio::time::sleep(service).await;
                latencies.push(Instant::now() - from);
            }
            latencies
        }
        let open = run(Some(100.0)).await;
        let closed = run(None).await;
        let slow = |l: &[Duration]| l.iter().filter(|d| **d > Duration::from_millis(5)).count();
        assert_eq!(slow(&closed), 1, "closed loop: only the stalled send itself");
        // Send k (due at 10k ms) goes out at 700 + (k - 21) ms once the stall is over: slow
        // until k = 74.
        assert!((50..=56).contains(&slow(&open)), "open loop: {} slow sends", slow(&open));
        assert!(open[21] >= Duration::from_millis(490), "the next send waited out the stall: {:?}", open[21]);
        assert!(open[199] <= Duration::from_millis(2), "the sender caught up by the end: {:?}", open[199]);
    }
}
