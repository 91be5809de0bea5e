//! Sample workload: a UPI-style payment API.
//!
//! `POST /payments` takes `{merchant_id, payer_vpa, amount, currency}` (amount in integer
//! paise, currency INR) with a required `Idempotency-Key` header, validates it, computes
//! the MDR fee from the configured schedule, writes the payment to the ledger in
//! `wasi:keyvalue` and answers 201 with the payment. `GET /payments/{id}` reads one back;
//! `GET /health` answers 200.
//!
//! Build: `cargo build --profile guest --target wasm32-wasip2 -p dabba-example-payment`;
//! serve: `dabba serve target/wasm32-wasip2/guest/payment.wasm --kv-dir .dabba/kv`.
//! Configuration keys: `max_amount_paise`, `mdr_rules` (JSON tiers), `bucket`.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written rupees_paise: 2_000_00 is ₹2,000.00"
)]

pub mod api;
pub mod config;
pub mod fee;
pub mod validate;

use dabba_sdk::kv::Bucket;
use dabba_sdk::{HttpError, Request, Response};

/// The component's entry point: one request, one fresh instance.
pub fn handle(req: Request) -> Response {
    match app() {
        Ok(app) => api::router().handle(&app, &req),
        Err(e) => e.into(),
    }
}

fn app() -> Result<api::App, HttpError> {
    let config = config::PaymentConfig::load()
        .map_err(|e| HttpError::internal(format!("payment service misconfigured: {e}")))?;
    let ledger = Bucket::open(&config.bucket)?;
    Ok(api::App {
        config,
        ledger,
        now_ms: dabba_sdk::time::now_unix_millis,
    })
}

dabba_sdk::http_component!(handle);
