//! Any bytes as the resume list a device reads on stdin (`--resume-from -`):
//! an error or a list that round-trips, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quba_wire::Resume;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Resume>(data) {
        let back: Resume = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
});
