//! Claims of limited job types (`ops_type_limits`): at most N running
//! across every daemon, at most N started per second or minute, at most N
//! running per tenant, and round-robin across tenants.
//!
//! Every rule is decided in the database, never by counting in one
//! process: a limited type's claim is one short transaction that locks the
//! type's row (so claims of that type from every daemon take turns), counts
//! its running jobs per tenant in a fresh statement (which sees every claim
//! committed before the lock was granted), claims what the rules leave, and
//! saves the rate window and the fair cursor in the locked row. A limit
//! reached leaves jobs queued; the claimer tries again after
//! [`LimitedClaim::retry_after`].
//!
//! Rates use a sliding-window counter (as Cloudflare's and Oban Pro's rate
//! limiters do): starts in the current fixed window plus the previous
//! window's starts weighted by how much of it the sliding window still
//! covers. Two integers per type, at the cost of assuming the previous
//! window's starts were spread evenly; a first window may start its whole
//! allowance at once.

use std::time::Duration;

use crate::db::queries::{self, ClaimParams, FairParams, LimitRules, LockedLimit};
use crate::error::Result;

/// How soon a claim held back by a max-running or per-tenant limit tries
/// again: running jobs of the type may finish on another daemon, which
/// says nothing to this one. 200 ms: a limited type's freed room is used
/// within a fifth of a second, for about five short transactions per second
/// per daemon and held-back type.
pub(crate) const BOUND_RETRY: Duration = Duration::from_millis(200);

/// The shortest wait before a rate-limited claim tries again, so that a
/// high rate does not turn into a busy loop of lock round trips.
const RATE_RETRY_MIN: Duration = Duration::from_millis(10);

/// Which rule decided that fewer jobs were claimed than there were slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitKind {
    MaxRunning,
    Rate,
    PerTenant,
}

impl LimitKind {
    /// Every kind, for zeroed series.
    pub const ALL: [LimitKind; 3] = [Self::MaxRunning, Self::Rate, Self::PerTenant];

    /// The `limit` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::MaxRunning => "max_running",
            Self::Rate => "rate",
            Self::PerTenant => "per_tenant",
        }
    }
}

/// What a limited claim did.
pub(crate) struct LimitedClaim {
    /// The claimed rows, as `worker/claim.sql` returns them.
    pub rows: Vec<tokio_postgres::Row>,
    /// The rule that held jobs back, if one did.
    pub bound: Option<LimitKind>,
    /// When a held-back claim should try again.
    pub retry_after: Option<Duration>,
}

/// A sliding-window rate counter: the current window's start (epoch
/// seconds), the starts in it, and the starts in the window before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateWindow {
    pub start: f64,
    pub count: i32,
    pub previous: i32,
}

impl RateWindow {
    /// The window at `now`: rolled forward (the current count becomes the
    /// previous one after one period, both are forgotten after two), or a
    /// fresh one aligned to the period.
    pub fn at(start: Option<f64>, count: i32, previous: i32, period: f64, now: f64) -> Self {
        match start {
            Some(s) if now < s + period => Self {
                start: s,
                count,
                previous,
            },
            Some(s) if now < s + 2.0 * period => Self {
                start: s + period,
                count: 0,
                previous: count,
            },
            _ => Self {
                start: (now / period).floor() * period,
                count: 0,
                previous: 0,
            },
        }
    }

    /// The locked row's window at its database time.
    pub fn of(locked: &LockedLimit, period: f64) -> Self {
        Self::at(
            locked.window_start,
            locked.window_count,
            locked.previous_count,
            period,
            locked.db_now,
        )
    }

    /// Starts the sliding window ending at `now` holds, estimated.
    fn estimate(&self, period: f64, now: f64) -> f64 {
        let covered = 1.0 - ((now - self.start) / period).clamp(0.0, 1.0);
        f64::from(self.previous) * covered + f64::from(self.count)
    }

    /// How many may start now under `limit` per `period`.
    pub fn room(&self, limit: i32, period: f64, now: f64) -> i64 {
        let left = f64::from(limit) - self.estimate(period, now);
        // Rounded up: an estimate of 19.4 leaves room for one, so that a
        // steady claimer starts the whole rate (rounded down it settled at
        // 19 of 20 per second, the previous window's tail never quite
        // gone). The hair keeps an estimate of exactly 20 at no room.
        (left - 1e-9).ceil().max(0.0) as i64
    }

    /// Seconds from `now` until one more may start (the estimate falls
    /// below `limit`), assuming nothing else starts meanwhile.
    pub fn wait_for_room(&self, limit: i32, period: f64, now: f64) -> f64 {
        let want = f64::from(limit) - 1e-6;
        let count = f64::from(self.count);
        let previous = f64::from(self.previous);
        // Within this window the estimate is previous * (1 - f) + count.
        let at = if count <= want && previous > 0.0 {
            self.start + period * (1.0 - (want - count) / previous)
        } else if count <= want {
            now
        } else {
            // Only once this window is the previous one: count * (1 - f').
            self.start + period + period * (1.0 - want / count)
        };
        (at - now).max(0.0)
    }
}

/// One limited type's claim (see the module's documentation): at most
/// `p.limit` jobs, fewer when a rule says so.
pub(crate) async fn claim(
    c: &mut deadpool_postgres::Object,
    job_type: &str,
    p: &ClaimParams<'_>,
) -> Result<LimitedClaim> {
    let tx = c.transaction().await?;
    let Some(locked) = queries::lock_type_limit(&tx, job_type).await? else {
        // Cleared meanwhile: the next claim treats the type as unlimited.
        tx.commit().await?;
        return Ok(LimitedClaim {
            rows: Vec::new(),
            bound: None,
            retry_after: None,
        });
    };
    let rules = &locked.rules;
    let running = if rules.max_running.is_some() || rules.per_tenant_max_running.is_some() {
        queries::count_running(&tx, job_type).await?
    } else {
        Vec::new()
    };
    let plan = plan(&locked, &running, p.limit);
    let rows = if plan.take == 0 {
        Vec::new()
    } else if rules.claims_fairly() {
        let f = FairParams {
            after: locked.fair_after.as_deref(),
            running_tenants: running.iter().map(|(t, _)| t.as_str()).collect(),
            running_counts: running.iter().map(|(_, n)| *n).collect(),
            per_tenant_max: rules.per_tenant_max_running,
        };
        queries::claim_fair(&tx, job_type, p, plan.take, &f).await?
    } else {
        queries::claim_limited(&tx, job_type, p, plan.take).await?
    };
    let claimed = rows.len() as i64;
    let fair_after = if rules.claims_fairly() {
        last_served(&rows)?.or(locked.fair_after.clone())
    } else {
        None
    };
    let window = plan.window.map(|w| RateWindow {
        count: w
            .count
            .saturating_add(i32::try_from(claimed).unwrap_or(i32::MAX)),
        ..w
    });
    let saved = (
        locked.window_start,
        locked.window_count,
        locked.previous_count,
    );
    let now = window.map_or(saved, |w| (Some(w.start), w.count, w.previous));
    if now != saved || fair_after != locked.fair_after {
        queries::save_limit_state(&tx, job_type, now, fair_after.as_deref()).await?;
    }
    tx.commit().await?;
    // Per-tenant caps show only in what the claim found: fewer jobs than
    // asked for while some tenant is at its cap.
    let bound = plan.bound.or_else(|| {
        let cap = rules.per_tenant_max_running?;
        let capped = running.iter().any(|(_, n)| *n >= i64::from(cap));
        (claimed < plan.take && capped).then_some(LimitKind::PerTenant)
    });
    let retry_after = match bound {
        None => None,
        Some(LimitKind::Rate) => Some(plan.rate_wait),
        Some(_) => Some(BOUND_RETRY),
    };
    Ok(LimitedClaim {
        rows,
        bound,
        retry_after,
    })
}

/// What the rules leave for one claim.
#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    /// How many to claim.
    pub take: i64,
    /// The rule that made `take` smaller than the free slots.
    pub bound: Option<LimitKind>,
    /// The rate window before this claim's starts (None: no rate rule).
    pub window: Option<RateWindow>,
    /// When a rate-bound claim should try again.
    pub rate_wait: Duration,
}

/// How many jobs a claim of `free` slots may take under `locked`'s rules,
/// with `running` jobs per tenant. Pure, so the rules are unit-tested.
pub(crate) fn plan(locked: &LockedLimit, running: &[(String, i64)], free: i64) -> Plan {
    let rules = &locked.rules;
    let mut take = free;
    let mut bound = None;
    if let Some(max) = rules.max_running {
        let total: i64 = running.iter().map(|(_, n)| n).sum();
        let room = (i64::from(max) - total).max(0);
        if room < take {
            take = room;
            bound = Some(LimitKind::MaxRunning);
        }
    }
    let mut window = None;
    let mut rate_wait = Duration::ZERO;
    if let Some((limit, period)) = rules.rate {
        let w = RateWindow::of(locked, period);
        let room = w.room(limit, period, locked.db_now);
        if room < take {
            take = room;
            bound = Some(LimitKind::Rate);
            let after = if room > 0 {
                // Room for some now, and more later: after one more's share.
                period / f64::from(limit)
            } else {
                w.wait_for_room(limit, period, locked.db_now)
            };
            rate_wait = Duration::from_secs_f64(after.clamp(0.0, period)).max(RATE_RETRY_MIN);
        }
        window = Some(w);
    }
    Plan {
        take,
        bound,
        window,
        rate_wait,
    }
}

/// The tenant of the job a fair claim took last (its highest round, then
/// position), where the next fair claim starts.
fn last_served(rows: &[tokio_postgres::Row]) -> Result<Option<String>> {
    let mut last: Option<((i64, i64), String)> = None;
    for r in rows {
        let key: (i64, i64) = (r.try_get("fair_round")?, r.try_get("fair_pos")?);
        if last.as_ref().is_none_or(|(k, _)| key > *k) {
            last = Some((key, r.try_get("tenant_id")?));
        }
    }
    Ok(last.map(|(_, t)| t))
}

/// Which rule holds back `h`'s runnable jobs now, and how many: all of them
/// when the type is at its max-running or rate limit, those of capped
/// tenants otherwise. For the leader's held-back gauges.
pub(crate) fn held_back(h: &queries::LimitHeld) -> Option<(LimitKind, i64)> {
    let locked = &h.locked;
    let rules: &LimitRules = &locked.rules;
    if h.runnable == 0 {
        return None;
    }
    if rules.max_running.is_some_and(|m| h.running >= i64::from(m)) {
        return Some((LimitKind::MaxRunning, h.runnable));
    }
    if let Some((limit, period)) = rules.rate {
        let w = RateWindow::of(locked, period);
        if w.room(limit, period, locked.db_now) == 0 {
            return Some((LimitKind::Rate, h.runnable));
        }
    }
    (h.runnable_of_capped_tenants > 0)
        .then_some((LimitKind::PerTenant, h.runnable_of_capped_tenants))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(rules: LimitRules, window: Option<(f64, i32, i32)>, now: f64) -> LockedLimit {
        let (s, c, p) = window.map_or((None, 0, 0), |(s, c, p)| (Some(s), c, p));
        LockedLimit {
            rules,
            window_start: s,
            window_count: c,
            previous_count: p,
            fair_after: None,
            db_now: now,
        }
    }

    #[test]
    fn max_running_leaves_the_difference_and_never_less_than_zero() {
        let rules = LimitRules {
            max_running: Some(5),
            ..Default::default()
        };
        let running = vec![("a".to_string(), 2), ("b".to_string(), 1)];
        let p = plan(&locked(rules.clone(), None, 0.0), &running, 20);
        assert_eq!((p.take, p.bound), (2, Some(LimitKind::MaxRunning)));
        let p = plan(&locked(rules.clone(), None, 0.0), &running, 1);
        assert_eq!((p.take, p.bound), (1, None), "the slots decided");
        let over = vec![("a".to_string(), 9)];
        assert_eq!(plan(&locked(rules, None, 0.0), &over, 20).take, 0);
    }

    #[test]
    fn a_fresh_rate_window_allows_the_whole_limit_then_refills_at_the_rate() {
        let rules = LimitRules {
            rate: Some((20, 1.0)),
            ..Default::default()
        };
        // A fresh window at t = 100.25: aligned to 100, nothing started.
        let p = plan(&locked(rules.clone(), None, 100.25), &[], 100);
        assert_eq!(p.take, 20);
        assert_eq!(p.window.map(|w| w.start), Some(100.0));
        // All 20 started in [100, 101): at 101.25 the previous window still
        // covers 75 %, so 15 count and 5 may start.
        let p = plan(
            &locked(rules.clone(), Some((100.0, 20, 0)), 101.25),
            &[],
            100,
        );
        assert_eq!((p.take, p.bound), (5, Some(LimitKind::Rate)));
        // Two periods later everything is forgotten.
        let p = plan(&locked(rules, Some((100.0, 20, 7)), 102.5), &[], 100);
        assert_eq!(p.take, 20);
    }

    #[test]
    fn a_steady_claimer_starts_the_rate_and_not_more() {
        // One claim every 10 ms for 10 s at 20/s: the starts a real worker
        // would make, with the window saved after each claim.
        let rules = LimitRules {
            rate: Some((20, 1.0)),
            ..Default::default()
        };
        let mut state: Option<(f64, i32, i32)> = None;
        let mut started = 0;
        let mut started_after_first_second = 0;
        for step in 0..1000 {
            let now = 1_000.0 + f64::from(step) * 0.01;
            let p = plan(&locked(rules.clone(), state, now), &[], 100);
            let w = p.window.expect("rate window");
            state = Some((w.start, w.count + p.take as i32, w.previous));
            started += p.take;
            if now >= 1_001.0 {
                started_after_first_second += p.take;
            }
        }
        assert!((200..=220).contains(&started), "{started}");
        assert!(
            (179..=181).contains(&started_after_first_second),
            "{started_after_first_second}"
        );
    }

    #[test]
    fn a_rate_bound_claim_waits_until_the_next_start_is_due() {
        let rules = LimitRules {
            rate: Some((20, 1.0)),
            ..Default::default()
        };
        // 20 started in the window that began at 100; at 100.5 nothing may
        // start until the window rolls (and the first bit of it passes).
        let p = plan(&locked(rules.clone(), Some((100.0, 20, 0)), 100.5), &[], 10);
        assert_eq!(p.take, 0);
        let wait = p.rate_wait.as_secs_f64();
        assert!((wait - 0.5).abs() < 1e-3, "{wait}");
        // 12 in the previous window, 10 in this one, 80 % through it: the
        // estimate 12 * 0.2 + 10 = 12.4 leaves room; at 20 it would not.
        let p = plan(
            &locked(rules.clone(), Some((100.0, 10, 12)), 100.8),
            &[],
            10,
        );
        assert_eq!(p.take, 8);
        let p = plan(
            &locked(rules.clone(), Some((100.0, 18, 10)), 100.5),
            &[],
            10,
        );
        assert_eq!(p.take, 0, "estimate 23");
        // It falls below 20 once 10 * (1 - f) < 2: at f = 0.8.
        assert!(
            (p.rate_wait.as_secs_f64() - 0.3).abs() < 1e-3,
            "{:?}",
            p.rate_wait
        );
        // Per minute: 60/min, 60 in the previous window, 0 now, at 30 s into
        // the window: 30 count, room for 30.
        let per_min = LimitRules {
            rate: Some((60, 60.0)),
            ..Default::default()
        };
        let p = plan(&locked(per_min, Some((120.0, 0, 60)), 150.0), &[], 100);
        assert_eq!(p.take, 30);
    }

    #[test]
    fn the_tighter_rule_decides() {
        let rules = LimitRules {
            max_running: Some(3),
            rate: Some((100, 1.0)),
            ..Default::default()
        };
        let p = plan(&locked(rules.clone(), None, 0.5), &[], 50);
        assert_eq!((p.take, p.bound), (3, Some(LimitKind::MaxRunning)));
        let rules = LimitRules {
            max_running: Some(300),
            rate: Some((2, 1.0)),
            ..Default::default()
        };
        let p = plan(&locked(rules, None, 0.5), &[], 50);
        assert_eq!((p.take, p.bound), (2, Some(LimitKind::Rate)));
    }
}
