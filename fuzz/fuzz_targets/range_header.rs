//! cargo-fuzz entry for `range_header`; the input's meaning and the properties checked are in
//! `tincan_fuzz::range_header` (shared with the stable `replay` runner).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tincan_fuzz::range_header::run(data));
