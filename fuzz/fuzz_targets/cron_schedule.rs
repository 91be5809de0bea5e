//! Fuzz target `cron_schedule`: `dabba_spec::fuzzing::cron_schedule` on libFuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dabba_spec::fuzzing::cron_schedule(data));
