//! Enqueue a job in the same transaction as your own writes: both commit
//! together or not at all.
//!
//! ```sh
//! DATABASE_URL=postgres://… cargo run --example enqueue_in_tx
//! ```
//!
//! It creates a table of its own (`example_orders`), writes an order and its
//! job and commits, then does the same and rolls back, and shows that only
//! the first job exists. The database must be migrated (`opsrunner migrate`).

use opsrunner::NewJob;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = opsrunner::config::env::require_database_url()?;
    let (mut client, conn) = url.pg_config().connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS example_orders (id bigint PRIMARY KEY)")
        .await?;
    let mut ids = Vec::new();
    for (order, commit) in [(1_i64, true), (2, false)] {
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO example_orders (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&order],
        )
        .await?;
        let job =
            NewJob::new("sleep", json!({ "ms": 10 })).idempotency_key(&format!("order-{order}"));
        let inserted = opsrunner::jobs::insert(&tx, &job).await?;
        ids.push(inserted.id);
        if commit {
            // The job becomes visible, and a worker is woken, at commit.
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
    }
    for (id, committed) in ids.iter().zip([true, false]) {
        let found = client
            .query_opt("SELECT status::text FROM ops_jobs WHERE id = $1", &[id])
            .await?
            .map(|r| r.get::<_, String>(0));
        println!("job {id} (committed: {committed}): {found:?}");
    }
    Ok(())
}
