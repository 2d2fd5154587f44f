//! Test support, for opsrunner's own tests and for embedders' tests: a
//! throwaway PostgreSQL cluster started from the local server binaries.
//! Not covered by semver: it may change in any release.

mod pgtemp;

pub use pgtemp::{TempCluster, find_bindir, remove_on_exit};
