//! docs/openapi.json is what the code generates, and documents every route
//! the shim serves.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn the_checked_in_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let on_disk = std::fs::read_to_string(&path).expect("docs/openapi.json exists");
    let generated = opsrunner::api::openapi::json();
    assert!(
        on_disk == generated,
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
    );
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let doc: Value = serde_json::from_str(&opsrunner::api::openapi::json()).unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_string(), path.clone()));
            }
        }
    }
    let mut served: Vec<(String, String)> = opsrunner::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // Every protected route declares the X-Ops-Key scheme and a 401.
    for (method, path) in &served {
        if path.starts_with("/api/") {
            let op = &paths[path][method];
            assert!(op["security"].is_array(), "{method} {path} has no security");
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} has no 401"
            );
        }
    }
}

#[test]
fn the_status_filter_lists_every_job_state() {
    let doc: Value = serde_json::from_str(&opsrunner::api::openapi::json()).unwrap();
    let documented: Vec<&str> = doc["components"]["schemas"]["StatusFilter"]["enum"]
        .as_array()
        .expect("StatusFilter is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let states: Vec<&str> = opsrunner::jobs::JobStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(documented, states);
}

/// Schemathesis (`--checks all`: status codes, content types, response
/// schemas, schema-valid requests accepted, schema-violating ones refused,
/// authentication not ignored, wrong methods answered 405) against a real
/// shim with a valid key finds nothing. The document is used as it is
/// checked in, with two narrowings that only a deployment can know: the job
/// types this shim accepts whose handler takes any payload (`noop`), and no
/// `policy_token` (accepted only for action types; tests/api.rs and
/// tests/roles.rs cover tokens). `scripts/test` installs schemathesis and
/// sets `OPSRUNNER_SCHEMATHESIS`.
#[tokio::test]
async fn schemathesis_finds_no_conformance_failure_against_a_real_shim() {
    let db = migrated_db().await;
    let key = "conformance-master-key-0123456789abcdef0123";
    let api = ApiProcess::start(
        &db.url,
        &[
            ("OPS_API_KEY", key),
            // Thousands of requests in seconds: the limits are tested in
            // tests/api.rs, not here.
            ("OPSRUNNER_API__RATE_PER_KEY", "100000"),
            ("OPSRUNNER_API__BURST_PER_KEY", "100000"),
            ("OPSRUNNER_API__RATE_PER_IP", "100000"),
            ("OPSRUNNER_API__BURST_PER_IP", "100000"),
        ],
        &[],
    )
    .await;
    let mut doc: Value = serde_json::from_str(&opsrunner::api::openapi::json()).unwrap();
    let create = &mut doc["components"]["schemas"]["CreateJob"];
    create["properties"]["job_type"] = json!({"type": "string", "enum": ["noop"]});
    create["properties"]
        .as_object_mut()
        .expect("CreateJob has properties")
        .remove("policy_token")
        .expect("CreateJob has a policy_token");
    let dir = temp_dir("schemathesis");
    let spec = dir.join("openapi.json");
    std::fs::write(&spec, doc.to_string()).unwrap();
    // scripts/test installs it and names it; otherwise one on PATH.
    let program = std::env::var("OPSRUNNER_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let out = tokio::process::Command::new(&program)
        .arg("run")
        .arg(&spec)
        .args(["--url", &api.base])
        .args(["-H", &format!("X-Ops-Key: {key}")])
        .args(["--checks", "all", "--max-examples", "60", "--seed", "1"])
        // One worker: with two, Python 3.11's ast.parse (used by
        // hypothesis to describe filters) raised "AST constructor recursion
        // depth mismatch" from two threads.
        .args(["--workers", "1"])
        .current_dir(&*dir)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): run the suite with scripts/test, which installs \
                 schemathesis, or set OPSRUNNER_SCHEMATHESIS to its path"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The report's end names each failure and how to reproduce it.
    let text: String = {
        let chars: Vec<char> = text.chars().collect();
        chars[chars.len().saturating_sub(12_000)..].iter().collect()
    };
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(
        text.contains("generated"),
        "schemathesis ran no test case:\n{text}"
    );
}
