//! Databases for tests of what the production roles may do: a throwaway
//! cluster of the test's own where every role but the admin must log in
//! with its password (SCRAM), migrated by the admin (the owner), with
//! `sql/roles/roles.sql` applied, and login roles made members of its group
//! roles. Roles are cluster-wide, so nothing is left on a shared server.

use std::sync::Arc;

use opsrunner::testing::TempCluster;

use super::server::{TestDb, connect};

/// A migrated database with the roles applied, on a cluster of its own.
pub struct RolesDb {
    /// The owner's (superuser's) view.
    pub db: std::mem::ManuallyDrop<TestDb>,
    cluster: Arc<TempCluster>,
}

impl std::ops::Deref for RolesDb {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        &self.db
    }
}

/// Starts the cluster, migrates, applies `sql/roles/roles.sql`.
pub async fn roles_db() -> RolesDb {
    let cluster = tokio::task::spawn_blocking(TempCluster::start_password_auth)
        .await
        .unwrap()
        .expect("throwaway cluster with password authentication");
    let admin = connect(&cluster.url("postgres")).await;
    let name = format!("roles_{:08x}", rand::random::<u32>());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    // ManuallyDrop: the database dies with the cluster.
    let db = std::mem::ManuallyDrop::new(TestDb {
        url: cluster.url(&name),
        name,
    });
    let mut c = db.client().await;
    opsrunner::db::migrate::migrate(&mut c).await.unwrap();
    let roles = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/roles/roles.sql"),
    )
    .unwrap();
    c.batch_execute(&roles)
        .await
        .expect("sql/roles/roles.sql applies");
    RolesDb {
        db,
        cluster: Arc::new(cluster),
    }
}

impl RolesDb {
    /// A new LOGIN role with a password, member of `group`
    /// (`opsrunner_worker`, `opsrunner_api`); returns its URL.
    pub async fn login(&self, group: &str) -> String {
        let user = format!("{group}_{:06x}", rand::random::<u32>() & 0xff_ffff);
        let password = format!("pw-{:016x}", rand::random::<u64>());
        self.db
            .client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {group}"
            ))
            .await
            .unwrap();
        let mut u = url::Url::parse(&self.db.url).unwrap();
        u.set_username(&user).unwrap();
        u.set_password(Some(&password)).unwrap();
        u.to_string()
    }

    /// The cluster, for its port.
    pub fn cluster(&self) -> &TempCluster {
        &self.cluster
    }
}
