//! The policy-token parser: never a panic; anything it accepts was signed
//! with the secret, and signing what it returns gives the same claims back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use opsrunner::policy::{Secret, sign, verify};

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(b"fuzzing-secret-0123456789abcdef!!".to_vec());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claims) = verify(&secret, text) {
        let again = sign(&secret, &claims).expect("accepted claims can be signed");
        assert_eq!(verify(&secret, &again).unwrap(), claims);
    }
    // A token built from the input's bytes as claims must round-trip too.
    if let Ok(claims) = serde_json::from_slice::<opsrunner::policy::Claims>(data)
        && let Ok(token) = sign(&secret, &claims)
    {
        assert_eq!(verify(&secret, &token).unwrap(), claims);
        assert!(verify(&Secret::new(b"another-secret-0123456789abcdef!!".to_vec()), &token).is_err());
    }
});
