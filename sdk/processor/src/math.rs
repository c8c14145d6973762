//! The float functions `core` lacks, with the same bits on every target.
//!
//! `f64::sqrt` lives in std, which a module does not link, and the wasm32 intrinsic is not
//! stable yet. [`sqrt`] is `libm`'s, which is correctly rounded as IEEE 754 requires, so a
//! processor computes the same bits natively (in tests) and in the module.

/// The square root, correctly rounded; NaN for negative input.
#[inline]
pub fn sqrt(x: f64) -> f64 {
    libm::sqrt(x)
}

/// Rounds half away from zero to an integer value.
#[inline]
pub fn round(x: f64) -> f64 {
    libm::round(x)
}

/// Rounds to `decimals` decimal places (at most 15), half away from zero. Values too large to
/// have that many decimals are returned unchanged.
pub fn round_to(x: f64, decimals: u8) -> f64 {
    const POWERS: [f64; 16] =
        [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let scale = POWERS[usize::from(decimals.min(15))];
    let scaled = x * scale;
    if !scaled.is_finite() || scaled.abs() >= 9.0e15 {
        return x;
    }
    libm::round(scaled) / scale
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Exact squares stay exact, and negatives give NaN as IEEE 754 says.
    #[test]
    fn sqrt() {
        assert_eq!(super::sqrt(16.0), 4.0);
        assert_eq!(super::sqrt(0.0), 0.0);
        assert!(super::sqrt(-1.0).is_nan());
    }

    /// Rounding to decimals gives the nearest short decimal.
    #[test]
    fn round_to() {
        assert_eq!(super::round_to(21.53 * 9.0 / 5.0 + 32.0, 2), 70.75);
        assert_eq!(super::round_to(-1.005, 0), -1.0);
        assert_eq!(super::round_to(2.5, 0), 3.0);
        assert_eq!(super::round_to(1e300, 2), 1e300);
    }

    proptest! {
        /// Bit for bit the same as the hardware instruction std uses.
        #[test]
        fn same_bits_as_std(x in 0.0f64..1e300) {
            prop_assert_eq!(super::sqrt(x).to_bits(), std::primitive::f64::sqrt(x).to_bits());
        }
    }
}
