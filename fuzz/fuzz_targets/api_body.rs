//! Fuzz target `api_body`: `dabba_spec::fuzzing::api_body` on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dabba_spec::fuzzing::api_body(data));
