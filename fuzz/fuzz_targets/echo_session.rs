//! cargo-fuzz entry for `echo_session`; the input's meaning and the properties checked are in
//! `tincan_fuzz::echo_session` (shared with the stable `replay` runner).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tincan_fuzz::echo_session::run(data));
