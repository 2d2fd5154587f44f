//! [`Check`]: configuration rules as a table, each section checking itself
//! (`WorkerConfig::check`, …), every failure in the one format
//! `key (env VAR) why` that names the setting and the variable that sets it.
//! The first failure wins, as an operator fixes one thing at a time.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::Error;

/// The environment variable that sets `key`: `worker.concurrency` is
/// `OPSRUNNER_WORKER__CONCURRENCY` (the loader maps variables back the same
/// way).
pub fn env_var_for(key: &str) -> String {
    crate::error::setting_env_var(key)
}

/// Collects the first failed rule.
#[derive(Debug, Default)]
pub struct Check {
    first: Option<Error>,
}

impl Check {
    /// A check with nothing failed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `why` for `key` unless `ok` (or an earlier rule failed).
    pub fn rule(&mut self, key: &'static str, ok: bool, why: &str) {
        if !ok && self.first.is_none() {
            self.first = Some(Error::Setting {
                key,
                why: why.to_string(),
            });
        }
    }

    /// A duration that must not be zero.
    pub fn nonzero(&mut self, key: &'static str, d: Duration) {
        self.rule(key, !d.is_zero(), "must be greater than zero");
    }

    /// A number within `range`.
    pub fn range<T>(&mut self, key: &'static str, v: T, range: RangeInclusive<T>)
    where
        T: PartialOrd + std::fmt::Display,
    {
        let why = format!("must be between {} and {}", range.start(), range.end());
        self.rule(key, range.contains(&v), &why);
    }

    /// A socket address like `example`; with `may_be_empty`, empty disables
    /// the listener.
    pub fn addr(&mut self, key: &'static str, v: &str, may_be_empty: bool, example: &str) {
        let ok = (may_be_empty && v.is_empty()) || v.parse::<std::net::SocketAddr>().is_ok();
        let why = if may_be_empty {
            format!("must be an address like {example}, or empty to disable")
        } else {
            format!("must be an address like {example}")
        };
        self.rule(key, ok, &why);
    }

    /// Job type or queue names, `[a-z][a-z0-9_.-]{0,63}` each.
    pub fn names(&mut self, key: &'static str, names: &[String]) {
        self.rule(
            key,
            names.iter().all(|n| crate::jobs::valid_name(n)),
            "holds a name that is not [a-z][a-z0-9_.-]{0,63}",
        );
    }

    /// A failure that has its own wording (entries of `[[exec]]`, …).
    pub fn fail_with(&mut self, e: Error) {
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    /// The first failure, if any.
    pub fn finish(self) -> Result<(), Error> {
        self.first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_names_the_setting_and_its_variable() {
        let mut c = Check::new();
        c.range("worker.concurrency", 0, 1..=10);
        c.nonzero("worker.lease", Duration::ZERO);
        let msg = c.finish().unwrap_err().to_string();
        assert_eq!(
            msg,
            "configuration error: worker.concurrency (env OPSRUNNER_WORKER__CONCURRENCY) must be between 1 and 10"
        );
    }
}
