//! Exponential backoff with jitter, for reconnects, write retries and job retries.

use std::time::Duration;

use rand::Rng;

/// `base * 2^(n-1)`, capped at `max`, then scaled by a random factor in
/// [0.5, 1.0] so that many workers that failed together do not retry together.
pub fn delay(n: u32, base: Duration, max: Duration) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    let factor = rand::rng().random_range(0.5..=1.0);
    raw.mul_f64(factor)
}

/// A retry loop's state: each `next()` waits longer, `reset()` after success.
#[derive(Debug, Clone)]
pub struct Backoff {
    n: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { n: 0, base, max }
    }

    pub fn next_delay(&mut self) -> Duration {
        self.n = self.n.saturating_add(1);
        delay(self.n, self.base, self.max)
    }

    pub fn reset(&mut self) {
        self.n = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for n in 1..40 {
            let d = delay(n, base, max);
            let full = base.saturating_mul(1 << (n - 1).min(30)).min(max);
            assert!(d <= full && d >= full / 2, "n={n} d={d:?} full={full:?}");
        }
    }
}
