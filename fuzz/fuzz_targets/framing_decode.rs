//! cargo-fuzz entry for `framing_decode`; the input's meaning and the properties checked are in
//! `tincan_fuzz::framing_decode` (shared with the stable `replay` runner).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tincan_fuzz::framing_decode::run(data));
