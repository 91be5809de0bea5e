//! Fuzz target `units`: `dabba_spec::fuzzing::units` on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dabba_spec::fuzzing::units(data));
