//! `[retention]`: how long finished jobs and audit rows are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Check;

/// `[retention]`: how long finished jobs and audit rows are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Succeeded jobs (and their events) older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub jobs: Duration,
    /// Failed jobs are kept longer by default (180 days): they are what an
    /// incident review reads.
    #[serde(with = "humantime_serde")]
    pub failed: Duration,
    /// Cancelled jobs, likewise (180 days).
    #[serde(with = "humantime_serde")]
    pub cancelled: Duration,
    /// Audit rows older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub audit: Duration,
    /// How often the elected daemon prunes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows deleted per statement, so that no prune holds locks for long.
    pub batch: i32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            jobs: Duration::from_secs(90 * 86_400),
            failed: Duration::from_secs(180 * 86_400),
            cancelled: Duration::from_secs(180 * 86_400),
            audit: Duration::from_secs(365 * 86_400),
            interval: Duration::from_secs(3600),
            batch: 5000,
        }
    }
}

impl RetentionConfig {
    /// The `[retention]` rules.
    pub(crate) fn check(&self, c: &mut Check) {
        c.nonzero("retention.jobs", self.jobs);
        c.nonzero("retention.failed", self.failed);
        c.nonzero("retention.cancelled", self.cancelled);
        c.nonzero("retention.audit", self.audit);
        c.nonzero("retention.interval", self.interval);
        c.range("retention.batch", self.batch, 1..=100_000);
    }
}
