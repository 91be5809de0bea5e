//! Fuzz target `manifest`: `dabba_spec::fuzzing::manifest` on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dabba_spec::fuzzing::manifest(data));
