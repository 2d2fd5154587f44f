//! Every statement under `sql/queries/` prepares against the migrated schema,
//! with as many parameters as its header comment documents (`$1 …` up to the
//! highest `$n` named there, or "No parameters."), and every file there is
//! loaded by `db::queries` (none forgotten, none loaded that is not a file).

mod common;

use common::*;

/// The header: the leading `--` lines.
fn header(sql: &str) -> String {
    sql.lines()
        .take_while(|l| l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The parameter count the header documents, or `None` when it documents
/// none and does not say "No parameters.".
fn documented_params(header: &str) -> Option<usize> {
    let max = header
        .split('$')
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .max();
    match max {
        Some(n) => Some(n),
        None if header.to_ascii_lowercase().contains("no parameters") => Some(0),
        None => None,
    }
}

fn files_under(dir: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("read sql/queries") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.extension().is_some_and(|x| x == "sql") {
            out.push(p.to_string_lossy().into_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_in_sql_queries_prepares_against_the_migrated_schema() {
    let db = migrated_db().await;
    let c = db.client().await;
    let mut bad = Vec::new();
    for (name, sql) in opsrunner::db::queries::ALL {
        let Some(want) = documented_params(&header(sql)) else {
            bad.push(format!(
                "{name}: the header documents no parameters and does not say \"No parameters.\""
            ));
            continue;
        };
        match c.prepare(sql).await {
            Ok(stmt) if stmt.params().len() == want => {}
            Ok(stmt) => bad.push(format!(
                "{name}: the header documents {want} parameters, the statement takes {}",
                stmt.params().len()
            )),
            Err(e) => bad.push(format!("{name}: does not prepare: {e:?}")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/queries");
    let mut on_disk = Vec::new();
    files_under(&root, &mut on_disk);
    let mut on_disk: Vec<String> = on_disk
        .iter()
        .map(|p| {
            p.strip_prefix(&format!("{}/", root.display()))
                .unwrap_or(p)
                .to_string()
        })
        .collect();
    on_disk.sort();
    let mut loaded: Vec<String> = opsrunner::db::queries::ALL
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    loaded.sort();
    assert_eq!(on_disk, loaded, "sql/queries/ and db::queries::ALL differ");
}

#[test]
fn the_header_parser_reads_the_highest_parameter_named() {
    assert_eq!(
        documented_params("-- $1 ids, $2 owner,\n-- $10 token"),
        Some(10)
    );
    assert_eq!(documented_params("-- Flags. No parameters."), Some(0));
    assert_eq!(documented_params("-- Flags."), None);
}
