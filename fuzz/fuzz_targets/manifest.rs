//! Any bytes as a run's manifest.json: an error or a manifest that writes
//! back and reads the same, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quba_wire::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let text = serde_json::to_string_pretty(&m).expect("a parsed manifest serialises");
        let back: Manifest = serde_json::from_str(&text).expect("a written manifest parses");
        assert_eq!(back, m);
    }
});
