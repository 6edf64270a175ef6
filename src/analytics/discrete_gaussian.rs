//! Exact sampling from the discrete Gaussian N_Z(0, σ²), for the privacy budget.
//!
//! Canonne, Kamath and Steinke, *The Discrete Gaussian for Differential Privacy*
//! (NeurIPS 2020), algorithms 1–3, as OpenDP implements them
//! (`opendp::traits::samplers::cks20`): Bernoulli(exp(−γ)) from Bernoulli(γ/k) trials,
//! the discrete Laplace by a geometric over a uniform, and the discrete Gaussian by
//! rejection from the discrete Laplace. Every probability is an exact rational (σ² is
//! given as a fraction) and every coin comes from the operating system's CSPRNG through
//! `ring`, so there is no floating point anywhere on the path — the attack on
//! floating-point noise (Mironov, CCS 2012) does not apply.
//!
//! Integers are u128; a rational whose numerator would overflow is a probability far
//! below 2^-64 and is treated as 0.

use ring::rand::{SecureRandom, SystemRandom};

/// Why a sample could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct EntropyError;

/// A source of uniform coins: the OS CSPRNG.
pub(crate) struct Coins(SystemRandom);

impl Coins {
    pub(crate) fn new() -> Self {
        Self(SystemRandom::new())
    }

    /// Uniform in `0..n` (`n` > 0), by rejection so that it is exactly uniform.
    fn below(&self, n: u128) -> Result<u128, EntropyError> {
        if n <= 1 {
            return Ok(0);
        }
        // The largest multiple of n that fits: draws at or above it are redrawn.
        let zone = u128::MAX - (u128::MAX % n);
        loop {
            let mut bytes = [0u8; 16];
            self.0.fill(&mut bytes).map_err(|_| EntropyError)?;
            let x = u128::from_le_bytes(bytes);
            if x < zone {
                return Ok(x % n);
            }
        }
    }

    /// True with probability `num / den` (`num` ≤ `den`, `den` > 0).
    fn bernoulli(&self, num: u128, den: u128) -> Result<bool, EntropyError> {
        Ok(self.below(den)? < num)
    }

    /// True with probability exp(−num/den) (CKS20 algorithm 1).
    fn bernoulli_exp(&self, mut num: u128, den: u128) -> Result<bool, EntropyError> {
        // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋)).
        while num > den {
            if !self.bernoulli_exp_at_most_one(1, 1)? {
                return Ok(false);
            }
            num -= den;
        }
        self.bernoulli_exp_at_most_one(num, den)
    }

    /// exp(−γ) for γ = num/den in [0, 1]: the first k with Bernoulli(γ/k) false; true
    /// when k is odd.
    fn bernoulli_exp_at_most_one(&self, num: u128, den: u128) -> Result<bool, EntropyError> {
        let mut k: u128 = 1;
        loop {
            let Some(scaled) = den.checked_mul(k) else {
                // γ/k below 2^-64: the next trial is false for all practical purposes.
                return Ok(k % 2 == 1);
            };
            if !self.bernoulli(num, scaled)? {
                return Ok(k % 2 == 1);
            }
            k += 1;
        }
    }

    /// The discrete Laplace with integer scale `t` ≥ 1: P(x) ∝ exp(−|x|/t) (CKS20
    /// algorithm 2 with s = 1).
    fn discrete_laplace(&self, t: u128) -> Result<i128, EntropyError> {
        loop {
            let u = self.below(t)?;
            if !self.bernoulli_exp(u, t)? {
                continue;
            }
            let mut v: u128 = 0;
            while self.bernoulli_exp(1, 1)? {
                v += 1;
            }
            let magnitude = u + t * v;
            let negative = self.bernoulli(1, 2)?;
            if negative && magnitude == 0 {
                continue;
            }
            let magnitude = i128::try_from(magnitude).unwrap_or(i128::MAX);
            return Ok(if negative { -magnitude } else { magnitude });
        }
    }

    /// A draw from N_Z(0, σ²) with σ² = `num / den` (CKS20 algorithm 3).
    pub(crate) fn discrete_gaussian(&self, num: u128, den: u128) -> Result<i128, EntropyError> {
        if num == 0 {
            return Ok(0);
        }
        // t = ⌊σ⌋ + 1, from the integer square root of ⌊σ²⌋.
        let t = (num / den).isqrt() + 1;
        loop {
            let y = self.discrete_laplace(t)?;
            // Accept with probability exp(−(|y| − σ²/t)² / (2σ²)); with σ² = a/b:
            // (|y|·b·t − a)² / (2·a·b·t²).
            let accept = (|| {
                let yb = y.unsigned_abs().checked_mul(den)?.checked_mul(t)?;
                let diff = yb.abs_diff(num);
                let top = diff.checked_mul(diff)?;
                let bottom = 2u128
                    .checked_mul(num)?
                    .checked_mul(den)?
                    .checked_mul(t * t)?;
                Some((top, bottom))
            })();
            // Out of range (None): an acceptance probability below 2^-64.
            if let Some((top, bottom)) = accept
                && self.bernoulli_exp(top, bottom)?
            {
                return Ok(y);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_precision_loss)]
mod tests {
    use super::*;

    #[test]
    fn the_discrete_gaussian_has_mean_zero_and_the_asked_variance() {
        let coins = Coins::new();
        let n = 20_000;
        // σ² = 9.5.
        let samples: Vec<i128> = (0..n)
            .map(|_| coins.discrete_gaussian(19, 2).unwrap_or(0))
            .collect();
        let mean = samples.iter().sum::<i128>() as f64 / f64::from(n);
        let variance = samples
            .iter()
            .map(|x| (*x as f64 - mean).powi(2))
            .sum::<f64>()
            / f64::from(n);
        // Standard errors: 0.02 for the mean, ~0.1 for the variance; 6 of them.
        assert!(mean.abs() < 0.15, "mean {mean}");
        assert!((variance - 9.5).abs() < 0.6, "variance {variance}");
        // Symmetric: as many above as below.
        let above = samples.iter().filter(|x| **x > 0).count() as f64;
        let below = samples.iter().filter(|x| **x < 0).count() as f64;
        assert!(
            (above - below).abs() < 6.0 * (above + below).sqrt(),
            "{above} {below}"
        );
    }

    #[test]
    fn bernoulli_exp_matches_exp() {
        let coins = Coins::new();
        let n = 20_000u32;
        for (num, den) in [(1u128, 2u128), (3, 2), (5, 1)] {
            let hits = (0..n)
                .filter(|_| coins.bernoulli_exp(num, den).unwrap_or(false))
                .count() as f64;
            let p = (-(num as f64) / den as f64).exp();
            let se = (p * (1.0 - p) / f64::from(n)).sqrt();
            assert!(
                (hits / f64::from(n) - p).abs() < 6.0 * se,
                "{num}/{den}: {hits}"
            );
        }
    }

    #[test]
    fn zero_variance_is_no_noise() {
        assert_eq!(Coins::new().discrete_gaussian(0, 1).unwrap_or(1), 0);
    }
}
