//! The shipped example config is valid and matches the built-in defaults.

use opsrunner::config::Settings;

#[test]
fn the_example_config_parses_and_equals_the_defaults() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/opsrunner.example.toml");
    let loaded = Settings::load(Some(&path)).expect("example config loads");
    let defaults = Settings::default();
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(&defaults).unwrap(),
        "config/opsrunner.example.toml drifted from the defaults in src/config.rs"
    );
}

#[test]
fn an_unknown_key_in_the_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("opsrunner-cfg-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[worker]\nconcurency = 3\n").unwrap();
    let err = Settings::load(Some(&path)).unwrap_err().to_string();
    assert!(err.contains("concurency"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
