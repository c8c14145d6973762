//! Checking every stored batch of a partition again: all at once for the offline check
//! (`scan`), or a step at a time for the background scrub (`scrub`).

use super::*;

/// What [`Partition::scan`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    pub batches: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

/// Where a scrub of one partition stands between calls of [`Partition::scrub`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubCursor {
    /// The key to go on from.
    next: u64,
    /// Where the next batch must begin, when the last one checked out.
    expected: Option<u64>,
    /// The whole log was read.
    pub done: bool,
}

/// What one call of [`Partition::scrub`] read and found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScrubStep {
    pub batches: u64,
    pub bytes: u64,
    /// Each problem with the offset it starts at.
    pub problems: Vec<(u64, String)>,
}

impl Partition {
    /// Reads every stored batch and checks it as a read would (both checksums, its key) and
    /// that each begins where the one before ended, and the stats entry against them: for
    /// offline checks. Never stops at a problem; it lists each.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        match self.scrub(&mut ScrubCursor::default(), u64::MAX) {
            Ok(step) => {
                scan.batches = step.batches;
                scan.bytes = step.bytes;
                scan.problems = step.problems.into_iter().map(|(_, why)| why).collect();
            }
            Err(e) => scan.problems.push(format!("reading the batches failed: {e}")),
        }
        let (count, size) = (self.batch_count(), self.size_bytes());
        if scan.problems.is_empty() && (count, size) != (scan.batches, scan.bytes) {
            scan.problems.push(format!(
                "the stats entry says {count} batches of {size} bytes; the log holds {} of {}",
                scan.batches, scan.bytes
            ));
        }
        scan
    }

    /// Checks stored batches from `cursor` on, as [`Partition::scan`] does, until about
    /// `max_bytes` were read (then `cursor` says where to go on) or the log ends
    /// (`cursor.done`). Problems come with the offset they start at. For the background
    /// scrub, which calls it at a bounded rate while appends and retention go on.
    pub fn scrub(&self, cursor: &mut ScrubCursor, max_bytes: u64) -> Result<ScrubStep, StorageError> {
        self.check_live()?;
        let mut step = ScrubStep::default();
        for item in self.batches.range(offset_key(cursor.next)..) {
            let (key, stored) = item.map_err(|e| self.after_delete(e.into()))?;
            let value = match self.whole(&key, stored) {
                Ok(value) => Ok(value),
                // Retention removed it since the scrub found it.
                Err(_) if self.retained_meanwhile(&key) => continue,
                Err(e) => Err(e),
            };
            step.batches += 1;
            step.bytes += value.as_ref().map_or(0, |v| v.len() as u64);
            match value
                .and_then(|v| self.checked(&key, &v).map(|view| (view.base_offset(), view.next_offset())))
            {
                Ok((base, next_offset)) => {
                    // Retention may have moved the start past `want` since the last step.
                    let missing = |w: u64| w < base && w >= self.log_start() && !self.accepted(w, base);
                    if let Some(want) = cursor.expected.filter(|&w| missing(w)) {
                        step.problems
                            .push((want, format!("offsets {want}..{base} are missing between two batches")));
                    }
                    cursor.expected = Some(next_offset);
                    cursor.next = next_offset;
                }
                Err(e) => {
                    let at = decode_offset_key(&key);
                    step.problems.push((at.or(cursor.expected).unwrap_or(0), e.to_string()));
                    cursor.expected = None;
                    match at.and_then(|o| o.checked_add(1)) {
                        Some(next) => cursor.next = next,
                        // A key that is not an offset sorts nowhere a cursor can name.
                        None => break,
                    }
                }
            }
            if step.bytes >= max_bytes {
                return Ok(step);
            }
        }
        cursor.done = true;
        Ok(step)
    }
}
