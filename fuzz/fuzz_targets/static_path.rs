//! cargo-fuzz entry for `static_path`; the input's meaning and the properties checked are in
//! `tincan_fuzz::static_path` (shared with the stable `replay` runner).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tincan_fuzz::static_path::run(data));
