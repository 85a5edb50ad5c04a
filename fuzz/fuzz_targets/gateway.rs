//! cargo-fuzz entry for `gateway`; the input's meaning and the properties checked are in
//! `tincan_fuzz::gateway` (shared with the stable `replay` runner).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tincan_fuzz::gateway::run(data));
