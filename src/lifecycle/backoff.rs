//! Reconnect backoff: `min(2^attempts × initial, max)`, shortened by jitter.
//!
//! The jitter source is a seeded generator owned by the caller, so the same seed gives the
//! same delays: tests are exact and a node's peers still spread out (each peer is seeded
//! differently).

use std::time::Duration;

/// The policy, from `btp_nips.peer_connections`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Fraction in `[0, 1)`: a delay is drawn from `[(1 - jitter) × d, d]`.
    pub jitter: f64,
    /// Failed attempts allowed before the peer is failed.
    pub max_attempts: u32,
}

impl BackoffPolicy {
    /// The delay before the attempt that follows `attempts` failures, without jitter.
    pub fn base_delay(&self, attempts: u32) -> Duration {
        let factor = 1u64.checked_shl(attempts.min(63)).unwrap_or(u64::MAX);
        let millis = (self.initial.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(millis).min(self.max)
    }

    /// The delay with jitter applied: never more than the base delay, never less than
    /// `(1 - jitter)` of it, so the cap is respected and peers do not retry in lockstep.
    pub fn delay(&self, attempts: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base_delay(attempts);
        if self.jitter <= 0.0 {
            return base;
        }
        let cut = rng.f64() * self.jitter;
        base.mul_f64(1.0 - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter,
            max_attempts: 10,
        }
    }

    #[test]
    fn doubles_then_caps() {
        let p = policy(0.0);
        let secs: Vec<u64> = (0..12).map(|a| p.base_delay(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let p = policy(0.2);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut below_base = 0;
        for attempts in 0..12 {
            let base = p.base_delay(attempts);
            for _ in 0..200 {
                let d = p.delay(attempts, &mut rng);
                assert!(d <= base, "{d:?} > {base:?}");
                assert!(d >= base.mul_f64(0.8), "{d:?} < 0.8 × {base:?}");
                if d < base {
                    below_base += 1;
                }
            }
        }
        assert!(below_base > 2000, "jitter was not applied: {below_base}");
    }
}
