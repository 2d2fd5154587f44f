//! `[retention]`: how long finished jobs and audit rows are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Check;

/// `[retention]`: how long finished jobs and audit rows are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Succeeded jobs (and their events) older than this are deleted.
    /// `"0s"` is delete-on-success: the statement that records a success
    /// deletes the row instead (no result is kept; see
    /// [`RetentionConfig::deletes_on_success`]).
    #[serde(with = "humantime_serde")]
    pub jobs: Duration,
    /// The same setting under the name the other statuses use
    /// (`retention.succeeded`); when set it wins over `jobs`.
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub succeeded: Option<Duration>,
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
            succeeded: None,
            failed: Duration::from_secs(180 * 86_400),
            cancelled: Duration::from_secs(180 * 86_400),
            audit: Duration::from_secs(365 * 86_400),
            interval: Duration::from_secs(3600),
            batch: 5000,
        }
    }
}

impl RetentionConfig {
    /// `retention.succeeded` (or `jobs`) `= "0s"`: succeeded jobs are deleted by the statement
    /// that ends them, Graphile Worker's model, for deployments that want
    /// the throughput and do not read results or succeeded rows back
    /// (measured in docs/benchmarks.md). Failed and cancelled jobs are kept
    /// as configured.
    pub fn deletes_on_success(&self) -> bool {
        self.succeeded_after().is_zero()
    }

    /// How long succeeded jobs are kept: `succeeded`, else `jobs`.
    pub fn succeeded_after(&self) -> Duration {
        self.succeeded.unwrap_or(self.jobs)
    }

    /// The `[retention]` rules.
    pub(crate) fn check(&self, c: &mut Check) {
        c.nonzero("retention.failed", self.failed);
        c.nonzero("retention.cancelled", self.cancelled);
        c.nonzero("retention.audit", self.audit);
        c.nonzero("retention.interval", self.interval);
        c.range("retention.batch", self.batch, 1..=100_000);
    }
}
