//! One key's state: its baseline of recent readings by time, robust statistics over it, the
//! seasonal profile of the previous period, and the medians of past windows (for drift).
//!
//! Everything here is a deterministic function of the readings: medians come from
//! `select_nth_unstable_by` with a total order on floats, and no sum is carried from one
//! reading to the next. So a flat series stays flat
//! (a series at exactly 0 has median 0 and spread 0, never a residue of rounding), and a
//! restored instance computes the same bits as one that never stopped.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use silt_processor::binary::{Reader, Write as _};
use silt_processor::Error;

/// Past medians kept for drift: eight a window, and the one before them.
const MEDIANS_MAX: usize = 10;
/// Readings a baseline needs before it is scored, whatever the warm-up.
pub const BASELINE_MIN: usize = 8;
/// 1.4826 · MAD estimates the standard deviation of normally distributed readings.
const MAD_TO_STD: f64 = 1.4826;
/// √(π/2) · mean absolute deviation estimates it too: the fallback when more than half the
/// readings equal the median, which makes the MAD 0 though the series is not flat.
const MEAN_AD_TO_STD: f64 = 1.2533;
/// q99 - q1 of normally distributed readings is 4.653 standard deviations.
const TAIL_RANGE_TO_STD: f64 = 4.653;
/// Share of the baseline left out at each end of the tail range: 1%, and at least
/// [`TAIL_READINGS_MIN`] readings, so that a few spikes in a short window stay out of it.
const TAIL: f64 = 0.01;
const TAIL_READINGS_MIN: usize = 3;

/// The statistics the baseline was last summarised into.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Median of the baseline.
    pub median: f64,
    /// Robust standard deviation of the baseline (0 for a flat one).
    pub spread: f64,
    /// Median of the readings older than the shift window, and of those inside it; `None`
    /// while either part has fewer than [`BASELINE_MIN`] / 2 readings.
    pub older_recent: Option<(f64, f64)>,
}

/// The previous and current period's mean per slot of the period.
#[derive(Debug, Clone, PartialEq)]
pub struct Seasonal {
    /// Per slot: (cycle, sum, count) of the current cycle, and (cycle, mean) of the one before.
    current: Vec<(i64, f64, u32)>,
    previous: Vec<(i64, f64)>,
}

impl Seasonal {
    pub fn new(slots: usize) -> Self {
        Seasonal {
            current: alloc::vec![(i64::MIN, 0.0, 0); slots],
            previous: alloc::vec![(i64::MIN, 0.0); slots],
        }
    }

    fn place(&self, t: i64, period_ms: i64) -> (i64, usize) {
        let cycle = t.div_euclid(period_ms);
        let phase = t.rem_euclid(period_ms);
        let slot = (i128::from(phase) * self.current.len() as i128 / i128::from(period_ms)) as usize;
        (cycle, slot.min(self.current.len() - 1))
    }

    /// The mean of `t`'s slot one period earlier, if there was one. Moves the slot on to
    /// `t`'s cycle, so call it before [`Seasonal::add`] for the same reading.
    pub fn reference(&mut self, t: i64, period_ms: i64) -> Option<f64> {
        let (cycle, slot) = self.place(t, period_ms);
        let cur = &mut self.current[slot];
        if cur.0 != cycle {
            if cur.2 > 0 {
                self.previous[slot] = (cur.0, cur.1 / f64::from(cur.2));
            }
            *cur = (cycle, 0.0, 0);
        }
        let (prev_cycle, mean) = self.previous[slot];
        (prev_cycle == cycle - 1).then_some(mean)
    }

    /// Adds a reading to its slot's current mean (after [`Seasonal::reference`] for `t`). A
    /// caller adds an anomalous reading clipped to what was expected, so that an anomaly
    /// does not echo as one of the opposite sign a period later.
    pub fn add(&mut self, t: i64, x: f64, period_ms: i64) {
        let (_, slot) = self.place(t, period_ms);
        let cur = &mut self.current[slot];
        cur.1 += x;
        cur.2 += 1;
    }
}

/// One key.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The baseline: `(time, value)` oldest first, values as scored (residuals from the
    /// seasonal profile when a period is set).
    pub readings: VecDeque<(i64, f64)>,
    /// Time of the first scored value and of the latest reading.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Time of the latest anomalous reading.
    pub last_anomaly_ms: Option<i64>,
    /// Page's CUSUM sums of clamped z, upwards and downwards.
    /// `(time, baseline median, spread)` every eighth of a window, the oldest about a window
    /// old: what drift is measured against.
    pub medians: VecDeque<(i64, f64, f64)>,
    pub stats: Stats,
    /// Readings since `stats` were computed.
    pub stale: u32,
    pub seasonal: Option<Seasonal>,
}

impl Series {
    pub fn new(season_slots: Option<usize>) -> Self {
        Series {
            readings: VecDeque::new(),
            first_ms: i64::MIN,
            last_ms: i64::MIN,
            last_anomaly_ms: None,
            medians: VecDeque::new(),
            stats: Stats::default(),
            stale: u32::MAX,
            seasonal: season_slots.map(Seasonal::new),
        }
    }

    /// Records the baseline's median and spread every eighth of `window_ms` and returns
    /// those of about one window ago, once there are (the oldest record at least a window
    /// old). Drift is measured in that older spread: the current window's spread grows with
    /// the drift inside it.
    pub fn a_window_ago(&mut self, t: i64, window_ms: i64) -> Option<(f64, f64)> {
        let step = (window_ms / 8).max(1);
        if self.medians.back().is_none_or(|&(mt, _, _)| t - mt >= step) {
            self.medians.push_back((t, self.stats.median, self.stats.spread));
            while self.medians.len() > MEDIANS_MAX
                || self.medians.get(1).is_some_and(|&(mt, _, _)| t - mt >= window_ms)
            {
                self.medians.pop_front();
            }
        }
        self.medians.front().filter(|&&(mt, _, _)| t - mt >= window_ms).map(|&(_, m, s)| (m, s))
    }

    /// Drops readings older than `window_ms` before `t`.
    pub fn evict(&mut self, t: i64, window_ms: i64) {
        while self.readings.front().is_some_and(|&(rt, _)| rt <= t.saturating_sub(window_ms)) {
            self.readings.pop_front();
            self.stale = u32::MAX;
        }
    }

    /// Adds a value to the baseline unless the last one is less than `gap_ms` older (which
    /// keeps a fast series to about `window / gap` readings that still span the window);
    /// `cap` bounds the baseline whatever the times.
    pub fn push(&mut self, t: i64, x: f64, gap_ms: i64, cap: usize) {
        if self.readings.back().is_some_and(|&(rt, _)| t - rt < gap_ms) {
            return;
        }
        if self.readings.len() >= cap {
            self.readings.pop_front();
        }
        self.readings.push_back((t, x));
        self.stale = self.stale.saturating_add(1);
    }

    /// Recomputes the statistics when the baseline changed by a 32nd since they were
    /// computed (or a reading left it): medians cost a pass over the baseline, so they are
    /// refreshed every few readings rather than on each. `scratch` is reused across keys.
    pub fn refresh(&mut self, t: i64, shift_window_ms: i64, scratch: &mut Vec<f64>) -> bool {
        let n = self.readings.len();
        if n == 0 || (self.stale as usize) < (n / 32).max(1) {
            return false;
        }
        self.stale = 0;
        scratch.clear();
        scratch.extend(self.readings.iter().map(|&(_, x)| x));
        let center = median(scratch);
        let (low, high) = tails(scratch.len());
        let tail_range = rank(scratch, high) - rank(scratch, low);
        let (mad, mean_ad) = deviations(scratch, center);
        let spread = if mad > 0.0 { MAD_TO_STD * mad } else { MEAN_AD_TO_STD * mean_ad };
        // A baseline of two levels (a daily cycle of day and night values) has a MAD of one
        // level's noise, and one with routine bursts a MAD of the quiet between them; the
        // range of its middle 98% sees both levels and the routine bursts, not rare spikes.
        let spread = spread.max(tail_range / TAIL_RANGE_TO_STD);
        let cut = t.saturating_sub(shift_window_ms);
        let older_n = self.readings.iter().take_while(|&&(rt, _)| rt <= cut).count();
        let older_recent =
            if shift_window_ms > 0 && older_n >= BASELINE_MIN / 2 && n - older_n >= BASELINE_MIN / 2 {
                scratch.clear();
                scratch.extend(self.readings.iter().take(older_n).map(|&(_, x)| x));
                let older = median(scratch);
                scratch.clear();
                scratch.extend(self.readings.iter().skip(older_n).map(|&(_, x)| x));
                Some((older, median(scratch)))
            } else {
                None
            };
        self.stats = Stats { median: center, spread, older_recent };
        true
    }

    pub fn snapshot(&self, out: &mut Vec<u8>) {
        out.put_i64(self.first_ms);
        out.put_i64(self.last_ms);
        match self.last_anomaly_ms {
            Some(t) => {
                out.put_u8(1);
                out.put_i64(t);
            }
            None => out.put_u8(0),
        }
        out.put_varint(self.medians.len() as u64);
        for &(t, m, spread) in &self.medians {
            out.put_i64(t);
            out.put_f64(m);
            out.put_f64(spread);
        }
        out.put_f64(self.stats.median);
        out.put_f64(self.stats.spread);
        match self.stats.older_recent {
            Some((a, b)) => {
                out.put_u8(1);
                out.put_f64(a);
                out.put_f64(b);
            }
            None => out.put_u8(0),
        }
        out.put_varint(u64::from(self.stale));
        out.put_varint(self.readings.len() as u64);
        for &(t, x) in &self.readings {
            out.put_i64(t);
            out.put_f64(x);
        }
        if let Some(s) = &self.seasonal {
            for (&(cycle, sum, count), &(prev_cycle, mean)) in s.current.iter().zip(&s.previous) {
                out.put_i64(cycle);
                out.put_f64(sum);
                out.put_varint(u64::from(count));
                out.put_i64(prev_cycle);
                out.put_f64(mean);
            }
        }
    }

    /// Reads what `snapshot` wrote for a key set up as `self` (its seasonal slots decide how
    /// many slot entries follow); `cap` bounds the readings.
    pub fn restore(&mut self, r: &mut Reader<'_>, cap: usize) -> Result<(), Error> {
        self.first_ms = r.i64()?;
        self.last_ms = r.i64()?;
        self.last_anomaly_ms = match r.u8()? {
            0 => None,
            1 => Some(r.i64()?),
            _ => return Err(r.error("bad flag")),
        };
        let n = r.count(MEDIANS_MAX)?;
        self.medians = (0..n).map(|_| Ok((r.i64()?, r.f64()?, r.f64()?))).collect::<Result<_, Error>>()?;
        let (median, spread) = (r.f64()?, r.f64()?);
        let older_recent = match r.u8()? {
            0 => None,
            1 => Some((r.f64()?, r.f64()?)),
            _ => return Err(r.error("bad flag")),
        };
        self.stats = Stats { median, spread, older_recent };
        self.stale = u32::try_from(r.varint()?).map_err(|_| r.error("stale count out of range"))?;
        let n = r.count(cap)?;
        self.readings = VecDeque::with_capacity(n.min(r.remaining() / 16));
        for _ in 0..n {
            self.readings.push_back((r.i64()?, r.f64()?));
        }
        if let Some(s) = &mut self.seasonal {
            for (cur, prev) in s.current.iter_mut().zip(s.previous.iter_mut()) {
                let (cycle, sum) = (r.i64()?, r.f64()?);
                let count = u32::try_from(r.varint()?).map_err(|_| r.error("slot count out of range"))?;
                *cur = (cycle, sum, count);
                *prev = (r.i64()?, r.f64()?);
            }
        }
        Ok(())
    }
}

/// The median of `xs` (reordered), the mean of the two middle values for an even count.
pub fn median(xs: &mut [f64]) -> f64 {
    let n = xs.len();
    if n == 0 {
        return 0.0;
    }
    let (_, &mut upper, _) = xs.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return upper;
    }
    // The largest of the lower half, which selection left below `n / 2`.
    let lower = xs[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lower + (upper - lower) / 2.0
}

/// The ranks of the tail range's ends among `n` readings (`n` at least 1).
fn tails(n: usize) -> (usize, usize) {
    let cut = ((TAIL * (n - 1) as f64 + 0.5) as usize).max(TAIL_READINGS_MIN).min((n - 1) / 2);
    (cut, n - 1 - cut)
}

/// The value of rank `k` (0-based, below `xs.len()`) of `xs` (reordered).
fn rank(xs: &mut [f64], k: usize) -> f64 {
    *xs.select_nth_unstable_by(k, f64::total_cmp).1
}

/// Median absolute deviation from `center`, and mean absolute deviation; `xs` is overwritten.
fn deviations(xs: &mut [f64], center: f64) -> (f64, f64) {
    let mut total = 0.0;
    for x in xs.iter_mut() {
        *x = (*x - center).abs();
        total += *x;
    }
    let mean = if xs.is_empty() { 0.0 } else { total / xs.len() as f64 };
    (median(xs), mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Medians of odd and even counts, and the MAD fallback when most readings are equal.
    #[test]
    fn medians_and_spread() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        let mut s = Series::new(None);
        for (i, x) in [5.0, 5.0, 5.0, 5.0, 5.0, 9.0, 1.0, 5.0].into_iter().enumerate() {
            s.push(i as i64, x, 0, 100);
        }
        let mut scratch = Vec::new();
        assert!(s.refresh(8, 0, &mut scratch));
        assert_eq!(s.stats.median, 5.0);
        assert_eq!(
            s.stats.spread,
            MEAN_AD_TO_STD * 1.0,
            "MAD is 0, mean deviation is 8/8; 1 and 9 are tails"
        );
        for x in [4.0, 6.0, 2.0, 8.0] {
            s.push(10, x, 0, 100);
        }
        assert!(s.refresh(10, 0, &mut scratch));
        assert_eq!(s.stats.spread, MAD_TO_STD * 0.5, "a MAD of 0.5; the tail range is 5 - 5");
    }

    /// The seasonal profile answers with the previous cycle's slot mean, never the current's.
    #[test]
    fn seasonal_reference_is_one_period_back() {
        let mut s = Seasonal::new(4);
        let mut add = |t: i64, x: f64| {
            let r = s.reference(t, 100);
            s.add(t, x, 100);
            r
        };
        assert_eq!(add(0, 1.0), None);
        assert_eq!(add(10, 3.0), None);
        assert_eq!(add(30, 7.0), None);
        assert_eq!(add(100, 5.0), Some(2.0), "slot 0 of cycle 0 held 1 and 3");
        assert_eq!(add(130, 5.0), Some(7.0));
        assert_eq!(add(350, 5.0), None, "slot 2 never had a reading");
    }
}
