//! `payment-smoke`: the payment API's smoke test, a `wasi:cli` component a blue-green
//! rollout runs as its pre-promotion analysis (`job` metric). It books one payment on
//! the preview and reads it back, and fails (exit 1, saying why) unless both answers
//! are right and came from the revision under test.
//!
//! It runs on a host, with what dabba gives a check in its environment:
//! `DABBA_INGRESS` (that host's ingress), `DABBA_ROUTE` (the app's route),
//! `DABBA_REVISION` (the preview's revision), `DABBA_PREVIEW_HEADER` (the header that
//! reaches the preview) and `DABBA_CHECK` (unique per measurement: the idempotency key).
//!
//! The payment is real, so it is booked for the merchant `m_smoke_test` (override with
//! `--merchant`) and for ₹1, where settlement and reconciliation can recognise it.

use std::process::ExitCode;

use dabba_sdk::job::{self, JobError};
use dabba_sdk::{Method, Request, Response, outbound};

fn env(name: &str) -> Result<String, JobError> {
    std::env::var(name)
        .map_err(|_| JobError::usage(format!("{name} is not set: run me as a rollout check")))
}

fn main() -> ExitCode {
    job::run(|| {
        let mut merchant = "m_smoke_test".to_string();
        let mut args = job::args().into_iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--merchant" => {
                    merchant = args
                        .next()
                        .ok_or_else(|| JobError::usage("--merchant needs a value"))?
                }
                other => return Err(JobError::usage(format!("unknown argument `{other}`"))),
            }
        }
        let ingress = env("DABBA_INGRESS")?;
        let route = env("DABBA_ROUTE")?;
        let revision = env("DABBA_REVISION")?;
        let preview = env("DABBA_PREVIEW_HEADER")?;
        let check = env("DABBA_CHECK")?;
        let send = |req: Request| -> Result<Response, JobError> {
            let resp = outbound::send(&ingress, req.with_header(&preview, "1"))
                .map_err(|e| JobError::new(e.to_string()))?;
            let answered = resp
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-dabba-revision"))
                .map(|(_, v)| v.as_str());
            if answered != Some(revision.as_str()) {
                return Err(JobError::new(format!(
                    "answered by revision {answered:?}, not the preview's {revision}"
                )));
            }
            Ok(resp)
        };
        let body = serde_json::json!({
            "merchant_id": merchant,
            "payer_vpa": "smoke@dabba",
            "amount": 100,
            "currency": "INR",
        });
        let booked = send(
            Request::new(Method::Post, route.trim_end_matches('/'))
                .with_header("content-type", "application/json")
                .with_header("idempotency-key", &format!("smoke-{check}"))
                .with_body(body.to_string()),
        )?;
        if !matches!(booked.status, 200 | 201) {
            return Err(JobError::new(format!(
                "booking answered {}: {}",
                booked.status,
                String::from_utf8_lossy(&booked.body)
            )));
        }
        let payment: serde_json::Value = serde_json::from_slice(&booked.body)
            .map_err(|e| JobError::new(format!("the booking's answer is not JSON: {e}")))?;
        let id = payment["id"]
            .as_str()
            .ok_or_else(|| JobError::new("the booking's answer has no id"))?;
        let read = send(Request::new(
            Method::Get,
            &format!("{}/{id}", route.trim_end_matches('/')),
        ))?;
        let back: serde_json::Value = serde_json::from_slice(&read.body).unwrap_or_default();
        if read.status != 200 || back["id"] != payment["id"] || back["amount"] != 100 {
            return Err(JobError::new(format!(
                "reading {id} back answered {}: {}",
                read.status,
                String::from_utf8_lossy(&read.body)
            )));
        }
        println!("booked and read back {id} on revision {revision}");
        Ok(())
    })
}
