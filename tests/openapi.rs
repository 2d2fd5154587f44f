//! docs/openapi.json is what the code generates, and documents every route
//! the shim serves.

use serde_json::Value;

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
