//! cargo-fuzz entry for `http_session`; the input's meaning and the properties checked are in
//! `tincan_fuzz::http_session` (shared with the stable `replay` runner).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tincan_fuzz::http_session::run(data));
