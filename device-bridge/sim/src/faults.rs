//! The fault plan: which fault, if any, each generated frame gets, drawn from a seeded PRNG so
//! that a run's faults replay from its seed.

use crate::SimError;

/// A small, fast, seedable PRNG (splitmix64): enough for fault plans and jitter, and the same
/// sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of device `index` in a run seeded with `seed`.
    pub fn for_device(seed: u64, index: usize) -> Rng {
        let mut r = Rng(seed ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happens to one generated frame on its first transmission. Retransmissions are always
/// sent as they are, so every fault is recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The first copy is not sent: a gap the bridge nacks (out of order) or an ack timeout.
    Drop,
    /// Sent twice in a row: the second copy is in flight or a duplicate at the bridge.
    Duplicate,
    /// Swapped with the next frame: the bridge nacks the early one as out of order.
    Reorder,
    /// Sent with a corrupted tag: the bridge nacks it (bad tag) and it is sent again.
    BadTag,
    /// The connection is closed right after it and opened again (hello, resend).
    Reconnect,
}

/// Probability of each fault per generated frame; at most one fault per frame. Also the
/// fault flags of `silt-devsim` and `silt-loadtest devices` (flattened into both).
#[derive(Debug, Clone, Copy, Default, PartialEq, clap::Args)]
pub struct FaultPlan {
    /// Probability that a frame's first copy is not sent.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub drop: f64,
    /// Probability that a frame is sent twice.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub duplicate: f64,
    /// Probability that a frame is swapped with the next one.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub reorder: f64,
    /// Probability that a frame's tag is corrupted (TCP only).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub bad_tag: f64,
    /// Probability that the connection is closed and opened again after a frame.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub reconnect: f64,
}

impl FaultPlan {
    pub fn validate(&self) -> Result<(), SimError> {
        let all = [self.drop, self.duplicate, self.reorder, self.bad_tag, self.reconnect];
        if all.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(SimError::Config("fault probabilities must be between 0 and 1".into()));
        }
        if all.iter().sum::<f64>() > 1.0 {
            return Err(SimError::Config("fault probabilities must add up to at most 1".into()));
        }
        Ok(())
    }

    pub fn is_none(&self) -> bool {
        *self == FaultPlan::default()
    }

    /// One draw: which fault, if any, the next frame gets.
    pub fn draw(&self, rng: &mut Rng) -> Fault {
        if self.is_none() {
            return Fault::None;
        }
        let mut u = rng.next_f64();
        for (p, fault) in [
            (self.drop, Fault::Drop),
            (self.duplicate, Fault::Duplicate),
            (self.reorder, Fault::Reorder),
            (self.bad_tag, Fault::BadTag),
            (self.reconnect, Fault::Reconnect),
        ] {
            if u < p {
                return fault;
            }
            u -= p;
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same faults; another seed other faults; the rates are as asked.
    #[test]
    fn the_fault_plan_replays_from_its_seed() {
        let faults = FaultPlan { drop: 0.1, duplicate: 0.1, reorder: 0.1, bad_tag: 0.1, reconnect: 0.1 };
        let draws = |seed| {
            let mut rng = Rng::for_device(seed, 7);
            (0..1000).map(|_| faults.draw(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(42), draws(42));
        assert_ne!(draws(42), draws(43));
        let drops = draws(42).iter().filter(|f| **f == Fault::Drop).count();
        assert!((50..150).contains(&drops), "{drops} drops of 1000 at p = 0.1");
        assert!(FaultPlan { drop: 0.6, duplicate: 0.6, ..FaultPlan::default() }.validate().is_err());
    }
}
