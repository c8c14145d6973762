//! The Numenta Anomaly Benchmark sample in `nab/`, read and scored as NAB scores a detector:
//! what the example's own evaluation (`cargo test -p anomaly-zscore nab_evaluation`) and the
//! broker's replay of it (`server/broker/tests/nab.rs`) both use, so that their numbers are
//! comparable. Test support, behind the `nab` feature: it reads files, and the module built
//! for wasm32 has no use for it.

extern crate std;

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::path::Path;

/// Share of each file NAB leaves unscored at its start (the detector's probation), in percent.
pub const PROBATION_PERCENT: usize = 15;

/// One file of the sample.
#[derive(Debug, Clone)]
pub struct Series {
    /// Path under `data/`, as the labels name it.
    pub path: String,
    /// The file's name without `.csv`: the record key it is replayed under.
    pub key: String,
    /// `(time in ms since the epoch, value as written)`, in file order.
    pub rows: Vec<(i64, String)>,
    /// The labelled anomaly windows, `[start, end]` in ms.
    pub windows: Vec<(i64, i64)>,
}

/// How one file's alerts (or a sum of files') score against the labelled windows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    /// Labelled windows.
    pub windows: usize,
    /// Windows with at least one alert inside.
    pub detected: usize,
    /// Scored alerts outside every window.
    pub false_alarms: usize,
    /// Alerts after the probation.
    pub alerts: usize,
}

impl core::ops::AddAssign for Score {
    fn add_assign(&mut self, other: Score) {
        self.windows += other.windows;
        self.detected += other.detected;
        self.false_alarms += other.false_alarms;
        self.alerts += other.alerts;
    }
}

impl Series {
    /// Scores the alerts raised at `alert_times_ms` as NAB does: alerts in the first
    /// [`PROBATION_PERCENT`] of the file are left out; a window counts as detected when an
    /// alert falls in `[start, end]`; an alert outside every window is a false alarm.
    pub fn score(&self, alert_times_ms: impl IntoIterator<Item = i64>) -> Score {
        let probation_end = self.rows[self.rows.len() * PROBATION_PERCENT / 100].0;
        let scored: Vec<i64> = alert_times_ms.into_iter().filter(|&t| t >= probation_end).collect();
        let inside = |t: i64| self.windows.iter().any(|&(a, b)| a <= t && t <= b);
        Score {
            windows: self.windows.len(),
            detected: self.windows.iter().filter(|&&(a, b)| scored.iter().any(|&t| a <= t && t <= b)).count(),
            false_alarms: scored.iter().filter(|&&t| !inside(t)).count(),
            alerts: scored.len(),
        }
    }
}

/// Every file of the sample at `dir` (which holds `labels/combined_windows.json` and `data/`),
/// in the labels' order. Panics, naming the file, on anything unreadable: this is test data.
pub fn load(dir: &Path) -> Vec<Series> {
    let labels = std::fs::read_to_string(dir.join("labels/combined_windows.json")).expect("NAB labels");
    windows_by_file(&labels)
        .into_iter()
        .map(|(path, windows)| {
            let csv = std::fs::read_to_string(dir.join("data").join(&path))
                .unwrap_or_else(|e| panic!("reading {path}: {e}"));
            let rows: Vec<(i64, String)> = csv
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (t, v) = l.split_once(',').unwrap_or_else(|| panic!("{path}: bad row {l:?}"));
                    (parse_time(t), v.trim().to_string())
                })
                .collect();
            // A few files repeat a time (daylight saving time in the source), none goes back.
            assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "{path}: times never decrease");
            let name = path.rsplit('/').next().expect("a file name");
            let key = name.strip_suffix(".csv").expect("a .csv file").to_string();
            Series { path, key, rows, windows }
        })
        .collect()
}

/// Milliseconds since the epoch of `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC; NAB's format).
pub fn parse_time(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap_or_else(|e| panic!("bad time {s:?}: {e}"));
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + n(17, 19) * 1000
}

/// The labelled windows per file (path under `data/`). The labels file is a JSON object of
/// file paths to lists of `[start, end]` strings, so its quoted strings in order are file
/// names (ending in `.csv`), each followed by its windows' bounds.
pub fn windows_by_file(labels: &str) -> BTreeMap<String, Vec<(i64, i64)>> {
    let strings: Vec<&str> = labels.split('"').skip(1).step_by(2).collect();
    let mut out: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut i = 0;
    while i < strings.len() {
        if strings[i].ends_with(".csv") {
            out.entry(strings[i].to_string()).or_default();
            current = Some(strings[i].to_string());
            i += 1;
        } else {
            let file = current.as_ref().expect("a window after a file name");
            let window = (parse_time(strings[i]), parse_time(strings[i + 1]));
            out.get_mut(file).expect("listed").push(window);
            i += 2;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Times parse to the epoch milliseconds of the date, fractions of a second dropped.
    #[test]
    fn parses_nab_times() {
        assert_eq!(parse_time("1970-01-01 00:00:00"), 0);
        assert_eq!(parse_time("2014-04-10 07:15:00.000000"), 1_397_114_100_000);
        assert_eq!(parse_time("2000-03-01 00:00:01"), 951_868_801_000);
    }

    /// Alerts in the probation are not scored; one alert per window detects it; the rest are
    /// false alarms.
    #[test]
    fn scores_as_nab_does() {
        let s = Series {
            path: "a/b.csv".into(),
            key: "b".into(),
            rows: (0..100).map(|t| (t, String::new())).collect(),
            windows: vec![(20, 30), (50, 60), (80, 90)],
        };
        let score = s.score([5, 25, 26, 40, 55]);
        assert_eq!(score, Score { windows: 3, detected: 2, false_alarms: 1, alerts: 4 });
    }
}
