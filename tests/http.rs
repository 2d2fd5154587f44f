//! The `http` handler against a webhook server on loopback: signature,
//! SSRF refusal, retry on 5xx, no retry on 4xx, no redirects.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opsrunner::handlers::http::HttpConfig;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const SECRET: &str = "test-signing-secret-0123456789-abcdef";

#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Answers each request with the next scripted status (the last repeats).
async fn webhook_server(script: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((mut sock, _)) = listener.accept().await {
            let status = script[n.min(script.len() - 1)];
            n += 1;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let k = sock.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = buf[pos + 4..].to_vec();
                    while body.len() < len {
                        let k = sock.read(&mut chunk).await.unwrap_or(0);
                        if k == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..k]);
                    }
                    break (head, body);
                }
            };
            log.lock().unwrap().push(Seen { head, body });
            let (extra, payload) = match status {
                200 => ("", r#"{"ok":true}"#),
                302 => ("Location: http://127.0.0.1:1/elsewhere\r\n", ""),
                _ => ("", "nope"),
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
                payload.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (addr, seen)
}

/// The webhook secret in a file of a fresh directory (removed on drop).
fn secret_file() -> (TempDir, std::path::PathBuf) {
    let dir = temp_dir("secret");
    let p = dir.join("secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    (dir, p)
}

fn hook(job_type: &str, url: String, allow: &[&str], secret: &std::path::Path) -> HttpConfig {
    HttpConfig {
        job_type: job_type.into(),
        url,
        secret_env: None,
        secret_file: Some(secret.to_path_buf()),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(5),
    }
}

async fn finish(
    c: &tokio_postgres::Client,
    id: Uuid,
) -> (String, i32, Option<String>, Option<serde_json::Value>) {
    wait_for(
        Duration::from_secs(15),
        "the webhook job to finish",
        || async {
            let r = c
                .query_one(
                    "SELECT status::text, attempt, error, result FROM ops_jobs WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let s: String = r.get(0);
            matches!(s.as_str(), "succeeded" | "failed").then(|| (s, r.get(1), r.get(2), r.get(3)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_on_5xx_and_refused_by_the_ssrf_guard() {
    let db = migrated_db().await;
    let c = db.client().await;
    let types = ["ok", "flaky", "gone", "moved", "guarded", "guardedname"];
    enable(&c, &types).await;
    let (_secret_dir, secret) = secret_file();
    let (ok, ok_seen) = webhook_server(vec![200]).await;
    let (flaky, flaky_seen) = webhook_server(vec![503, 200]).await;
    let (gone, _) = webhook_server(vec![404]).await;
    let (moved, moved_seen) = webhook_server(vec![302]).await;
    let (guarded, guarded_seen) = webhook_server(vec![200]).await;
    let mut settings = fast_settings();
    settings.http = vec![
        hook(
            "ok",
            format!("http://{ok}/hook?token=url-secret"),
            &["127.0.0.1"],
            &secret,
        ),
        hook(
            "flaky",
            format!("http://{flaky}/hook"),
            &["127.0.0.0/8"],
            &secret,
        ),
        hook(
            "gone",
            format!("http://{gone}/hook"),
            &["127.0.0.1"],
            &secret,
        ),
        hook(
            "moved",
            format!("http://{moved}/hook"),
            &["127.0.0.1"],
            &secret,
        ),
        // No allow-list: loopback is refused, by literal and by name.
        hook("guarded", format!("http://{guarded}/hook"), &[], &secret),
        hook(
            "guardedname",
            format!("http://localhost:{}/hook", guarded.port()),
            &[],
            &secret,
        ),
    ];
    let registry = settings.registry().unwrap();
    let cfg = opsrunner::config::Config::with_url(settings, db.db_url()).unwrap();
    let w = start_worker(&cfg, registry).await;
    let ids: Vec<Uuid> = {
        let mut v = Vec::new();
        for t in types {
            v.push(
                JobRow::new(t)
                    .payload(json!({"deploy": 42}))
                    .max_attempts(3)
                    .insert(&c)
                    .await,
            );
        }
        v
    };

    // Delivered, signed, and verifiable by the receiver.
    let (s, attempt, _, result) = finish(&c, ids[0]).await;
    assert_eq!((s.as_str(), attempt), ("succeeded", 1));
    assert_eq!(result, Some(json!({"status": 200, "body": {"ok": true}})));
    let req = ok_seen.lock().unwrap()[0].clone();
    assert_eq!(req.body, br#"{"deploy":42}"#);
    assert_eq!(req.header("idempotency-key"), Some(ids[0].to_string()));
    let sig = req
        .header("x-opsrunner-signature")
        .expect("signature header");
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t: u64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    assert_eq!(
        v1,
        opsrunner::handlers::http::sign(SECRET.as_bytes(), t, &req.body)
    );
    assert_ne!(
        v1,
        opsrunner::handlers::http::sign(b"some-other-secret-of-enough-length!!", t, &req.body)
    );

    // 503 is retried, then succeeds.
    let (s, attempt, _, _) = finish(&c, ids[1]).await;
    assert_eq!((s.as_str(), attempt), ("succeeded", 2));
    assert_eq!(flaky_seen.lock().unwrap().len(), 2);
    // 404 fails at once.
    let (s, attempt, e, _) = finish(&c, ids[2]).await;
    assert_eq!(
        (s.as_str(), attempt, e.as_deref()),
        ("failed", 1, Some("HTTP 404"))
    );
    // A redirect is not followed.
    let (s, attempt, e, _) = finish(&c, ids[3]).await;
    assert_eq!((s.as_str(), attempt), ("failed", 1));
    assert!(e.unwrap().contains("redirects are not followed"));
    assert_eq!(moved_seen.lock().unwrap().len(), 1);
    // The guard refuses loopback, permanently, before any byte is sent.
    for id in [ids[4], ids[5]] {
        let (s, attempt, e, _) = finish(&c, id).await;
        assert_eq!((s.as_str(), attempt), ("failed", 1));
        assert!(
            e.as_deref()
                .unwrap_or("")
                .contains("refused by the SSRF guard (loopback)"),
            "{e:?}"
        );
    }
    assert!(
        guarded_seen.lock().unwrap().is_empty(),
        "a refused request reached the server"
    );
    // No error or result carries the URL or the secret.
    let leaked: i64 = c
        .query_one(
            "SELECT count(*) FROM ops_jobs WHERE coalesce(error, '') || coalesce(result::text, '') ~ '(url-secret|test-signing-secret|127\\.0\\.0\\.1:)'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
    w.shutdown().await;
}

#[test]
fn a_short_or_missing_webhook_secret_fails_at_start_up_without_showing_it() {
    let dir = temp_dir("short");
    let short = dir.join("secret");
    std::fs::write(&short, "tiny-secret").unwrap();
    let mut s = fast_settings();
    s.http = vec![hook("hook", "https://example.com/x".into(), &[], &short)];
    let e = s.registry().expect_err("refused").to_string();
    assert!(
        e.contains("http[0]") && e.contains("at least 32 bytes"),
        "{e}"
    );
    assert!(!e.contains("tiny-secret"), "{e}");
    s.http[0].secret_file = None;
    s.http[0].secret_env = Some("OPSRUNNER_TEST_UNSET_SECRET_VAR".into());
    let e = s.registry().expect_err("refused").to_string();
    assert!(e.contains("OPSRUNNER_TEST_UNSET_SECRET_VAR"), "{e}");
    s.http[0].url = "ftp://example.com/".into();
    assert!(
        s.validate()
            .unwrap_err()
            .to_string()
            .contains("http[0].url")
    );
}
