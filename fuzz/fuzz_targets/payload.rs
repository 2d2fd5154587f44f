//! The shim's request parser and payload bounds: never a panic, never an
//! error that echoes the body, and every accepted payload within bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match opsrunner::api::jobs::parse_create(data) {
        Ok(req) => {
            if opsrunner::api::jobs::check_payload(&req.payload).is_ok() {
                assert!(opsrunner::api::jobs::depth(&req.payload) <= 10);
                assert!(serde_json::to_vec(&req.payload).unwrap().len() <= 1024 * 1024);
            }
        }
        Err(msg) => {
            // Bounded, and no 16-byte run of the input comes back, unless it
            // is a field name the message quotes.
            assert!(msg.len() < 200, "{msg}");
            if !msg.starts_with("unknown field") && !msg.starts_with("missing field") {
                if let Ok(text) = std::str::from_utf8(data) {
                    let chars: Vec<char> = text.chars().collect();
                    for w in chars.windows(16) {
                        let s: String = w.iter().collect();
                        if s.chars().all(|c| c.is_alphanumeric()) {
                            assert!(!msg.contains(&s), "{msg} echoes {s}");
                        }
                    }
                }
            }
        }
    }
});
