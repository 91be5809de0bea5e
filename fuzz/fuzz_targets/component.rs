//! Fuzz target `component`: `dabba_spec::fuzzing::component` on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dabba_spec::fuzzing::component(data));
