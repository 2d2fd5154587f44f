//! Databases for tests of what the production roles may do: a throwaway
//! cluster of the test's own where every role but the admin must log in
//! with its password (SCRAM), migrated by the admin (the owner), with
//! `sql/roles/roles.sql` applied, and login roles made members of its group
//! roles. Roles are cluster-wide, so nothing is left on a shared server.

use opsrunner::testing::TempCluster;

use super::server::{OwnDb, TestDb, own_db_with};

/// A migrated database with the roles applied, on a cluster of its own.
pub struct RolesDb(OwnDb);

impl std::ops::Deref for RolesDb {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        &self.0
    }
}

/// Starts the cluster, migrates, applies `sql/roles/roles.sql`.
pub async fn roles_db() -> RolesDb {
    let db = own_db_with(TempCluster::start_password_auth).await;
    let roles = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/roles/roles.sql"),
    )
    .unwrap();
    db.client()
        .await
        .batch_execute(&roles)
        .await
        .expect("sql/roles/roles.sql applies");
    RolesDb(db)
}

impl RolesDb {
    /// A new LOGIN role with a password, member of `group`
    /// (`opsrunner_worker`, `opsrunner_api`); returns its URL.
    pub async fn login(&self, group: &str) -> String {
        let user = format!("{group}_{:06x}", rand::random::<u32>() & 0xff_ffff);
        let password = format!("pw-{:016x}", rand::random::<u64>());
        self.0
            .client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {group}"
            ))
            .await
            .unwrap();
        let mut u = url::Url::parse(&self.0.url).unwrap();
        u.set_username(&user).unwrap();
        u.set_password(Some(&password)).unwrap();
        u.to_string()
    }
}

/// The login name in a URL.
pub fn role_of(url: &str) -> String {
    url::Url::parse(url).unwrap().username().to_string()
}

/// An application login bound to `tenant` by an operator's CLI (as the
/// worker role); returns its URL.
pub async fn bound_app(db: &RolesDb, tenant: &str) -> String {
    let app = db.login("opsrunner_app").await;
    let operator = db.login("opsrunner_worker").await;
    super::cli_ok(&operator, &["tenants", "bind", &role_of(&app), tenant]).await;
    app
}
