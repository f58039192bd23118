//! Retry delays: capped exponential backoff with "equal jitter", for job retries and for
//! redialling a broker that is down.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry, in milliseconds.
    pub base_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub cap_ms: u64,
    /// Fraction of the delay that is randomized, `0.0..=1.0`; out-of-range values are clamped.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped at
    /// `cap`, then reduced by a random share of up to `jitter` of itself, so the result lies in
    /// `[d * (1 - jitter), d]`. Keeping a guaranteed floor spreads out retries of jobs that
    /// failed together without letting any of them retry immediately.
    pub fn delay_ms(&self, attempt: u32, rng: &mut impl rand::Rng) -> u64 {
        let d = self.ceiling_ms(attempt);
        let jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        if jitter == 0.0 || d == 0 {
            return d;
        }
        let spread = (d as f64 * jitter) as u64;
        d - rng.random_range(0..=spread)
    }

    /// The un-jittered delay; saturates instead of overflowing for huge attempts.
    fn ceiling_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1);
        // checked_shl is None from 64 doublings on, where any non-zero base saturates anyway.
        let raw = match 1u64.checked_shl(doublings) {
            Some(factor) => self.base_ms.saturating_mul(factor),
            None if self.base_ms == 0 => 0,
            None => u64::MAX,
        };
        raw.min(self.cap_ms)
    }
}

/// Pause between attempts to reach a broker that is down: 50 ms doubling to [`REDIAL_CAP`],
/// each pause jittered down by up to half, so a worker notices a recovered Redis within about
/// half a second while a fleet of workers does not redial in lockstep.
#[derive(Debug, Clone)]
pub struct Redial {
    next: Duration,
}

/// First pause of a [`Redial`].
pub const REDIAL_FIRST: Duration = Duration::from_millis(50);
/// Longest pause of a [`Redial`]: the issue asks for workers to resume within 1 s of Redis
/// coming back, so the cap leaves room for the reconnect itself.
pub const REDIAL_CAP: Duration = Duration::from_millis(400);

impl Default for Redial {
    fn default() -> Self {
        Redial { next: REDIAL_FIRST }
    }
}

impl Redial {
    /// Start at the first pause.
    pub fn new() -> Redial {
        Redial::default()
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = REDIAL_FIRST;
    }

    /// The pause before the next attempt, in `[d / 2, d]` for the current step `d`.
    pub fn next_pause(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(REDIAL_CAP);
        let spread = d.as_millis() as u64 / 2;
        d - Duration::from_millis(rand::rng().random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn exact(base_ms: u64, cap_ms: u64) -> Backoff {
        Backoff {
            base_ms,
            cap_ms,
            jitter: 0.0,
        }
    }

    #[test]
    fn grows_exponentially() {
        let b = exact(100, u64::MAX);
        let got: Vec<u64> = (1..=5).map(|a| b.delay_ms(a, &mut rng())).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600]);
    }

    #[test]
    fn attempt_zero_acts_like_first() {
        assert_eq!(exact(100, 10_000).delay_ms(0, &mut rng()), 100);
    }

    #[test]
    fn caps() {
        let b = exact(100, 1_000);
        assert_eq!(b.delay_ms(4, &mut rng()), 800);
        assert_eq!(b.delay_ms(5, &mut rng()), 1_000);
        assert_eq!(b.delay_ms(30, &mut rng()), 1_000);
    }

    #[test]
    fn no_overflow_for_huge_attempts() {
        let b = exact(100, 60_000);
        for attempt in [63, 64, 65, 100, 1000, u32::MAX] {
            assert_eq!(b.delay_ms(attempt, &mut rng()), 60_000);
        }
        assert_eq!(exact(3, u64::MAX).delay_ms(1000, &mut rng()), u64::MAX);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let b = Backoff {
            base_ms: 1_000,
            cap_ms: 8_000,
            jitter: 0.5,
        };
        let mut r = rng();
        let samples: Vec<u64> = (0..10_000).map(|_| b.delay_ms(3, &mut r)).collect();
        assert!(samples.iter().all(|d| (2_000..=4_000).contains(d)));
        // Jitter actually spreads the values over the range.
        assert!(samples.iter().any(|d| *d < 2_200));
        assert!(samples.iter().any(|d| *d > 3_800));
    }

    #[test]
    fn full_jitter_and_clamping() {
        let mut r = rng();
        let full = Backoff {
            base_ms: 100,
            cap_ms: 100,
            jitter: 1.0,
        };
        assert!((0..1_000).all(|_| full.delay_ms(1, &mut r) <= 100));
        let over = Backoff {
            jitter: 7.0,
            ..full
        };
        assert!((0..1_000).all(|_| over.delay_ms(1, &mut r) <= 100));
        let nan = Backoff {
            jitter: f64::NAN,
            ..full
        };
        assert_eq!(nan.delay_ms(1, &mut r), 100);
    }

    #[test]
    fn redial_grows_to_its_cap_with_jitter() {
        let mut r = super::Redial::new();
        let pauses: Vec<u64> = (0..8).map(|_| r.next_pause().as_millis() as u64).collect();
        assert!((25..=50).contains(&pauses[0]), "{pauses:?}");
        assert!((50..=100).contains(&pauses[1]), "{pauses:?}");
        assert!(
            pauses[5..].iter().all(|p| (200..=400).contains(p)),
            "{pauses:?}"
        );
        r.reset();
        assert!(r.next_pause() <= super::REDIAL_FIRST);
    }

    #[test]
    fn zero_jitter_is_exact() {
        let b = exact(250, 10_000);
        let mut r = rng();
        assert!((0..100).all(|_| b.delay_ms(2, &mut r) == 500));
    }
}
