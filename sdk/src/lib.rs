//! `dabba-sdk` is the guest side of dabba: what a workload links to run as a dabba pod.
//!
//! It is a thin, ergonomic layer over standard interfaces — `wasi:http` for functions,
//! `wasi:cli` for jobs, `wasi:keyvalue` for state, `wasi:config` for configuration — so a
//! component built with it runs on any host that implements them, and a component built
//! without it runs on dabba.
//!
//! The core types are plain data: [`http::Request`] in, [`http::Response`] out, routed by
//! [`router::Router`], with errors as [`error::HttpError`]. Business logic written against
//! them compiles natively too, where [`kv::Bucket`] is an in-memory map and
//! [`config::get`] reads environment variables, so it is tested with `cargo test` and the
//! wasm edge stays a few lines.
//!
//! ```ignore
//! use dabba_sdk::http::{Request, Response};
//!
//! fn handle(req: Request) -> Response {
//!     Response::text(200, format!("hello from {}", req.path))
//! }
//!
//! dabba_sdk::http_component!(handle);
//! ```
//!
//! What it is not: a runtime. In a component it never spawns threads or opens sockets
//! ([`outbound`] asks the host); the host owns every resource and every limit.

pub mod config;
pub mod error;
pub mod http;
pub mod job;
pub mod kv;
#[cfg(all(feature = "native-server", not(target_arch = "wasm32")))]
pub mod native;
pub mod outbound;
pub mod router;
pub mod time;

pub use error::HttpError;
pub use http::{Method, Request, Response};
pub use router::{Params, Router};

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __wasm {
    pub use crate::wasm::*;
}

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(target_arch = "wasm32")]
#[allow(
    clippy::all,
    missing_docs,
    reason = "generated bindings for the dabba platform imports"
)]
mod bindings {
    wit_bindgen::generate!({
        path: "../spec/wit",
        world: "dabba:platform/platform",
        generate_all,
    });
}

/// Exports a `fn(Request) -> Response` as the component's `wasi:http/incoming-handler`.
///
/// Compiled for `wasm32-wasip2` this generates the export; compiled natively it expands
/// to nothing, so the crate's logic and tests build on the host too.
#[macro_export]
macro_rules! http_component {
    ($handler:path) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct DabbaHttpComponent;
            impl $crate::__wasm::incoming_handler::Guest for DabbaHttpComponent {
                fn handle(
                    request: $crate::__wasm::IncomingRequest,
                    out: $crate::__wasm::ResponseOutparam,
                ) {
                    $crate::__wasm::serve(request, out, $handler)
                }
            }
            $crate::__wasm::wasip2::http::proxy::export!(
                DabbaHttpComponent with_types_in $crate::__wasm::wasip2
            );
        };
    };
}
