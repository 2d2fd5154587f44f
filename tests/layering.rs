//! The dependency rule of the code's layout (../shared/LAYOUT.md, "B"), read
//! off the source so that a forbidden `use` fails `cargo test`:
//! nothing outside the worker, the CLI and the crate root reaches into the
//! worker; `policy` and `handlers` never read the configuration; SQL text is
//! loaded only by `db::queries` (statements) and `db::migrate` (migrations);
//! `db::queries` imports nothing of the crate but `error`; and the worker's
//! services never import `worker/mod.rs`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file as (path relative to the crate, code without comments).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, strip_comments(&text))
        })
        .collect()
}

/// Drops `//` comments (docs mention module paths freely).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // Not inside a string such as "http://…": good enough for this code.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The places in `sources` that break `rule`, as `file: what`.
fn violations(
    sources: &[(String, String)],
    applies: impl Fn(&str) -> bool,
    forbidden: &str,
) -> Vec<String> {
    sources
        .iter()
        .filter(|(path, _)| applies(path))
        .filter(|(_, code)| code.contains(forbidden))
        .map(|(path, _)| format!("{path}: names {forbidden}"))
        .collect()
}

#[test]
fn no_module_outside_the_worker_reaches_into_it() {
    let src = sources();
    let mut bad = violations(
        &src,
        |p| !p.starts_with("src/worker/") && !p.starts_with("src/cli/") && p != "src/lib.rs",
        "crate::worker",
    );
    bad.extend(violations(
        &src,
        |p| p == "src/policy.rs" || p.starts_with("src/handlers/"),
        "crate::config",
    ));
    bad.extend(violations(
        &src,
        |p| p != "src/db/queries.rs",
        "sql/queries",
    ));
    bad.extend(violations(
        &src,
        |p| p != "src/db/migrate.rs",
        "sql/migrations",
    ));
    assert!(bad.is_empty(), "layering rule broken:\n{}", bad.join("\n"));
}

#[test]
fn the_query_layer_imports_nothing_of_the_crate_but_error() {
    let src = sources();
    let (_, code) = src
        .iter()
        .find(|(p, _)| p == "src/db/queries.rs")
        .expect("src/db/queries.rs");
    let uses: Vec<&str> = code
        .lines()
        .filter(|l| l.contains("crate::") && !l.contains("crate::error"))
        .collect();
    assert!(uses.is_empty(), "db::queries names {uses:?}");
}

#[test]
fn worker_services_never_import_the_worker_module_itself() {
    let src = sources();
    let (_, root) = src
        .iter()
        .find(|(p, _)| p == "src/worker/mod.rs")
        .expect("src/worker/mod.rs");
    // The sibling modules, from `mod x;` lines: what `super::` may name.
    let siblings: Vec<String> = root
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("mod ")
                .or_else(|| l.trim().strip_prefix("pub mod "))
        })
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect();
    assert!(siblings.contains(&"state".to_string()), "{siblings:?}");
    let mut bad = Vec::new();
    for (path, code) in src
        .iter()
        .filter(|(p, _)| p.starts_with("src/worker/") && p != "src/worker/mod.rs")
    {
        // From a service, `super::` is worker/mod.rs; from maintenance/, it
        // is `super::super::`. Unit tests' `super::` is their own file.
        let prefix = if path.starts_with("src/worker/maintenance/") {
            "super::super::"
        } else {
            "super::"
        };
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let braced = rest.starts_with('{');
                if braced || (!name.is_empty() && name != "super" && !siblings.contains(&name)) {
                    bad.push(format!("{path}:{}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "worker services import worker/mod.rs:\n{}",
        bad.join("\n")
    );
}
