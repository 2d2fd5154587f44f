//! Waiting for the database to show something, with a deadline and a
//! message that says what was seen instead.

use std::future::Future;
use std::time::Duration;

use super::rows::status;

/// Polls `check` until it returns `Some`, or panics after `limit` with `what`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until job `id` has status `want`; on timeout, says what it had.
pub async fn wait_status(
    client: &tokio_postgres::Client,
    id: uuid::Uuid,
    want: &str,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = status(client, id).await;
        if now == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("job {id} is {now}, not {want}, after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no job is queued or running, or panics after `limit` saying
/// how many are left.
pub async fn wait_all_finished(client: &tokio_postgres::Client, limit: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM ops_jobs WHERE status IN ('queued', 'running')",
                &[],
            )
            .await
            .expect("count unfinished jobs")
            .get(0);
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} jobs not finished after {limit:?} ({what})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
