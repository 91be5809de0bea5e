//! `dabba-host` is the node: it runs Wasm components as pods.
pub mod engine;
pub mod kv;
pub mod platform;
