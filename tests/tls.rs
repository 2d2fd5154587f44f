//! TLS to PostgreSQL against a real server: a throwaway cluster given a CA,
//! a server certificate and a client certificate made at test time.

mod common;

use common::*;
use opsrunner::config::{DbConfig, DbUrl};
use opsrunner::testing::TempCluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Pki {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Pki {
        ca_pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (certificate PEM, key PEM) for `names`, signed by `pki`.
fn leaf(pki: &Pki, names: &[&str], cn: &str, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    (
        p.signed_by(&key, &pki.issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn write(dir: &std::path::Path, name: &str, contents: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p.to_string_lossy().into_owned()
}

/// Connects as the library does (pool settings, TLS from the URL), and says
/// whether the session is encrypted, or the error's text.
async fn try_connect(url: &str) -> Result<bool, String> {
    let url = DbUrl::parse(url, "DATABASE_URL").map_err(|e| e.to_string())?;
    let c = opsrunner::db::connect(&url, &DbConfig::default(), "tls-test")
        .await
        .map_err(|e| e.to_string())?;
    let row = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

async fn sql(cluster: &TempCluster, statements: &str) {
    let c = connect(&cluster.url("postgres")).await;
    // One at a time: ALTER SYSTEM refuses a multi-statement batch.
    for s in statements
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        c.batch_execute(s).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_verify_the_server_as_libpq_does_and_a_client_certificate_logs_in() {
    let cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .unwrap()
        .unwrap();
    let port = cluster.port();
    let dir = temp_dir("tls");
    let url =
        |host: &str, params: &str| format!("postgres://postgres@{host}:{port}/postgres?{params}");

    // A server without TLS: require refuses it, prefer falls back.
    let e = try_connect(&url("localhost", "sslmode=require"))
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("tls") || e.contains("SSL"), "{e}");
    assert_eq!(
        try_connect(&url("localhost", "sslmode=prefer")).await,
        Ok(false)
    );

    // Give it a certificate for "localhost" from our CA, and trust the CA
    // for client certificates.
    let good = ca("opsrunner test CA");
    let (srv_cert, srv_key) = leaf(&good, &["localhost"], "localhost", false);
    let (old_cert, old_key) = leaf(&good, &["localhost"], "localhost", true);
    let files = [
        ("server.crt", &srv_cert),
        ("server.key", &srv_key),
        ("expired.crt", &old_cert),
        ("expired.key", &old_key),
        ("root.crt", &good.ca_pem),
    ];
    for (name, pem) in files {
        cluster.install_file(name, pem.as_bytes()).unwrap();
    }
    let hba = "local all all trust\n\
               hostssl all certuser 127.0.0.1/32 cert\n\
               host all all 127.0.0.1/32 trust\n";
    cluster.install_file("pg_hba.conf", hba.as_bytes()).unwrap();
    sql(
        &cluster,
        "ALTER SYSTEM SET ssl = on;
         ALTER SYSTEM SET ssl_cert_file = 'server.crt';
         ALTER SYSTEM SET ssl_key_file = 'server.key';
         ALTER SYSTEM SET ssl_ca_file = 'root.crt';
         SELECT pg_reload_conf();
         CREATE ROLE certuser LOGIN;",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let ca_file = write(&dir, "ca.pem", &good.ca_pem);
    let other = ca("someone else's CA");
    let wrong_ca = write(&dir, "wrong-ca.pem", &other.ca_pem);
    let full =
        |host: &str, root: &str| url(host, &format!("sslmode=verify-full&sslrootcert={root}"));

    assert_eq!(
        try_connect(&full("localhost", &ca_file)).await,
        Ok(true),
        "verify-full"
    );
    assert_eq!(
        try_connect(&url("localhost", "sslmode=prefer")).await,
        Ok(true),
        "prefer takes TLS"
    );
    assert_eq!(
        try_connect(&url("localhost", "sslmode=require")).await,
        Ok(true)
    );
    // verify-ca checks the chain, not the name.
    let ca_only = url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca_file}"),
    );
    assert_eq!(try_connect(&ca_only).await, Ok(true), "verify-ca, any name");

    let e = try_connect(&full("localhost", &wrong_ca))
        .await
        .unwrap_err();
    assert!(
        e.contains("certificate") && e.contains("UnknownIssuer"),
        "wrong CA: {e}"
    );
    let e = try_connect(&full("127.0.0.1", &ca_file)).await.unwrap_err();
    assert!(e.contains("not valid for name"), "wrong host name: {e}");

    // A client certificate where pg_hba demands one.
    let (cli_cert, cli_key) = leaf(&good, &[], "certuser", false);
    let cert = write(&dir, "client.crt", &cli_cert);
    let key = write(&dir, "client.key", &cli_key);
    let as_certuser = |params: &str| {
        format!(
            "postgres://certuser@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca_file}{params}"
        )
    };
    assert_eq!(
        try_connect(&as_certuser(&format!("&sslcert={cert}&sslkey={key}"))).await,
        Ok(true),
        "cert authentication"
    );
    assert!(
        try_connect(&as_certuser("")).await.is_err(),
        "no client certificate"
    );

    // The CLI uses the same settings (migrate, check).
    let cli_url = full("localhost", &ca_file);
    for args in [&["migrate"][..], &["check"][..]] {
        let out = opsrunner_cli(&cli_url, args, &[]).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // An expired server certificate is refused.
    sql(
        &cluster,
        "ALTER SYSTEM SET ssl_cert_file = 'expired.crt';
         ALTER SYSTEM SET ssl_key_file = 'expired.key';
         SELECT pg_reload_conf();",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let e = try_connect(&full("localhost", &ca_file)).await.unwrap_err();
    assert!(e.to_lowercase().contains("expired"), "expired: {e}");
}

/// An address of this machine that is not loopback: the source address of
/// a route to TEST-NET-1 (a UDP connect sends nothing).
fn non_loopback_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    s.connect("192.0.2.1:9")
        .expect("this machine has a route off loopback (the test needs one)");
    let ip = s.local_addr().expect("local address").ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

/// `sslmode=disable` to a host that is not this machine's loopback warns at
/// start-up (naming the setting and the doc, not the password); the same
/// to loopback does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_connection_off_loopback_logs_a_warning_at_start_up() {
    const WARNING: &str = "the connection to the database is not encrypted";
    let db = migrated_db().await;
    let with_mode = |url: &str| {
        let mut u = url::Url::parse(url).unwrap();
        u.set_password(Some("pw-never-logged-51e0")).unwrap();
        u.query_pairs_mut().append_pair("sslmode", "disable");
        u.to_string()
    };
    let proxy = StallProxy::start_on(non_loopback_ip(), server_addr(&db.url)).await;
    let remote = WorkerProcess::start_url(&with_mode(&proxy.url_for(&db.url)), &[]).await;
    // The check runs before the daemon reports ready.
    let log = remote.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning for a plaintext remote connection:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("sslmode=verify-full"),
        "{line}"
    );
    assert!(!log.contains("pw-never-logged-51e0"), "{log}");
    drop(remote);

    let local = WorkerProcess::start_url(&with_mode(&db.url), &[]).await;
    let log = local.log_text();
    assert!(
        !log.contains(WARNING),
        "loopback is not warned about:\n{log}"
    );
}
