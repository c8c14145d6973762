//! The disk-space guard: produces stop, with a retriable `DiskFull`, while the data
//! directory's filesystem has less than `disk_free_min_bytes` free, and start again on their
//! own once space is freed.
//!
//! It must act before sled meets a full disk, not after: sled 0.34 keeps its first write
//! error for the life of the open database (`silt_storage::space`), so a broker that let sled
//! hit `ENOSPC` could take no write again until restarted. The guard samples free space five
//! times a second and, between samples, counts twice the bytes of each admitted batch against
//! it (sled writes a batch to its log and again when it cleans segments), so a burst cannot
//! overrun the floor between two samples. When it stops produces it deletes its ballast file,
//! which gives what was already admitted (batches in flight, offset commits, processor
//! outputs, the ledger) room to land; it fills the ballast again before it resumes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use silt_storage::space::{space, Ballast};

use crate::metrics::Metrics;

/// How often free space is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Bytes of disk an admitted batch byte is counted as until the next sample.
const WRITE_AMPLIFICATION: i64 = 2;
/// The floor when none is configured: this share of the filesystem...
const FLOOR_SHARE_PERCENT: u64 = 5;
/// ...but at least this...
const FLOOR_MIN: u64 = 4 << 20;
/// ...and at most this.
const FLOOR_MAX: u64 = 256 << 20;
/// The ballast file, in the data directory.
pub const BALLAST_FILE: &str = "space.ballast";

pub struct SpaceGuard {
    dir: std::path::PathBuf,
    floor: u64,
    ballast: Ballast,
    /// Free bytes at the last sample, less what was admitted since.
    room: AtomicI64,
    full: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SpaceGuard {
    /// A guard of the filesystem of `data_dir`, with its first sample taken. `floor`: free
    /// bytes below which produces stop (`None`: 5 % of the filesystem, between 4 and 256 MiB;
    /// `Some(0)`: never). The ballast is half the floor.
    pub fn new(
        data_dir: &Path,
        floor: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<SpaceGuard>> {
        let s = space(data_dir)?;
        let floor = floor.unwrap_or_else(|| (s.size / 100 * FLOOR_SHARE_PERCENT).clamp(FLOOR_MIN, FLOOR_MAX));
        let guard = Arc::new(SpaceGuard {
            dir: data_dir.to_owned(),
            floor,
            ballast: Ballast::new(data_dir.join(BALLAST_FILE), floor / 2),
            room: AtomicI64::new(i64::MAX),
            full: AtomicBool::new(false),
            metrics,
        });
        if floor == 0 {
            let _ = guard.ballast.release();
        } else {
            guard.sample();
        }
        Ok(guard)
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Admits a produce of `bytes`, or says why not (the disk is nearly full).
    pub fn admit(&self, bytes: u64) -> Result<(), String> {
        if self.floor == 0 {
            return Ok(());
        }
        let cost = i64::try_from(bytes).unwrap_or(i64::MAX).saturating_mul(WRITE_AMPLIFICATION);
        let left = self.room.fetch_sub(cost, Ordering::Relaxed).saturating_sub(cost);
        if self.full.load(Ordering::Relaxed) || left < i64::try_from(self.floor).unwrap_or(i64::MAX) {
            self.full.store(true, Ordering::Relaxed);
            self.metrics.disk_full_refusals.inc();
            return Err(self.refusal());
        }
        Ok(())
    }

    /// True while produces are refused.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    fn refusal(&self) -> String {
        format!(
            "the broker's disk is nearly full (less than {} MiB free in {}): nothing of this batch was stored; \
             produces resume on their own once space is freed",
            self.floor >> 20,
            self.dir.display()
        )
    }

    /// Samples free space until the process ends.
    pub async fn run(self: Arc<Self>) {
        if self.floor == 0 {
            return;
        }
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let guard = self.clone();
            let _ = tokio::task::spawn_blocking(move || guard.sample()).await;
        }
    }

    /// One sample: stops produces below the floor (giving the ballast back), resumes them
    /// once there is room for the ballast and a quarter of the floor more.
    fn sample(&self) {
        let Ok(mut s) = space(&self.dir) else { return };
        let was_full = self.full.load(Ordering::Relaxed);
        if s.free < self.floor {
            if !was_full {
                tracing::warn!(free = s.free, floor = self.floor, dir = %self.dir.display(),
                    "disk nearly full: produces are refused until space is freed");
            }
            self.full.store(true, Ordering::Relaxed);
            if self.ballast.release().unwrap_or(false) {
                tracing::warn!(
                    bytes = self.ballast.bytes(),
                    "released the space ballast for writes already admitted"
                );
                s = space(&self.dir).unwrap_or(s);
            }
        } else {
            // Stopped, it resumes only with room for the ballast and some more (no flapping at
            // the floor); running without room for a ballast (a small disk), it goes on without.
            let needed =
                self.floor + self.floor / 4 + if self.ballast.held() { 0 } else { self.ballast.bytes() };
            if s.free >= needed {
                match self.ballast.fill() {
                    Ok(()) => {
                        s = space(&self.dir).unwrap_or(s);
                        if was_full {
                            tracing::info!(free = s.free, "disk space freed: produces resume");
                        }
                        self.full.store(false, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot allocate the space ballast"),
                }
            }
        }
        self.room.store(i64::try_from(s.free).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.metrics.disk_free_bytes.set(i64::try_from(s.free).unwrap_or(i64::MAX));
        self.metrics.disk_full.set(i64::from(self.full.load(Ordering::Relaxed)));
    }
}
