//! A peer's TLS certificate: X.509 parsing and the NodeId binding extension.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rpc::tls::verify_binding(data);
    let _ = rpc::tls::decode_binding(data);
});
