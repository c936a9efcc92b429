//! The gateway's JSON tx (POST /v1/tx) down to a dag-core SignedTx.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(j) = serde_json::from_slice::<gateway::json::JsonSignedTx>(data) {
        let _ = j.to_signed();
    }
});
