//! Per-key and per-client-IP token buckets (GCRA, from `governor`). State is
//! in memory per shim process: with N shims behind a balancer a client gets up
//! to N times the rate, which is fine for a guard against floods and guessing.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::config::ApiConfig;

type Keyed<K> = RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, DefaultClock>;

/// Forget idle clients once this many are tracked, so memory stays bounded.
const SHRINK_AT: usize = 10_000;

pub(crate) struct Limits {
    per_ip: Keyed<IpAddr>,
    per_key: Keyed<String>,
    clock: DefaultClock,
}

fn quota(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    pub fn new(cfg: &ApiConfig) -> Self {
        Self {
            per_ip: RateLimiter::keyed(quota(cfg.rate_per_ip, cfg.burst_per_ip)),
            per_key: RateLimiter::keyed(quota(cfg.rate_per_key, cfg.burst_per_key)),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when over the limit.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.per_ip.len() > SHRINK_AT {
            self.per_ip.retain_recent();
        }
        self.per_ip
            .check_key(&ip)
            .map_err(|n| n.wait_time_from(self.clock.now()))
    }

    pub fn check_key(&self, key: &str) -> Result<(), Duration> {
        if self.per_key.len() > SHRINK_AT {
            self.per_key.retain_recent();
        }
        self.per_key
            .check_key(&key.to_string())
            .map_err(|n| n.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let cfg = ApiConfig {
            rate_per_key: 1,
            burst_per_key: 3,
            ..ApiConfig::default()
        };
        let l = Limits::new(&cfg);
        for _ in 0..3 {
            l.check_key("k").unwrap();
        }
        let wait = l.check_key("k").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own bucket.
        l.check_key("other").unwrap();
    }
}
