//! Fuzz target `route`: `dabba_spec::fuzzing::route` on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dabba_spec::fuzzing::route(data));
