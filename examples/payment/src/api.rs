//! The HTTP API: `POST /payments`, `GET /payments/{id}`, `GET /health`.
//!
//! Idempotency works like Stripe's: the payment id is derived from the merchant and the
//! `Idempotency-Key`, the payment record is written once by compare-and-swap, and a retry
//! with the same key and the same body gets the original payment back (201, with
//! `Idempotent-Replayed: true`) while the same key with a different body gets 409.

use dabba_sdk::kv::{self, Bucket};
use dabba_sdk::time::{Date, IST_OFFSET_MINUTES, format_rfc3339};
use dabba_sdk::{HttpError, Params, Request, Response, Router};
use ledger::Payment;
use sha2::{Digest, Sha256};

use crate::config::PaymentConfig;
use crate::validate::{NewPayment, validate, validate_idempotency_key};

/// Everything a request needs: configuration, the ledger bucket and a clock.
pub struct App {
    pub config: PaymentConfig,
    pub ledger: Bucket,
    /// Milliseconds since the Unix epoch; a parameter so tests can pin the date.
    pub now_ms: fn() -> i64,
}

pub fn router() -> Router<App> {
    Router::new()
        .get("/health", |_, _, _| {
            Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
        })
        .post("/payments", create_payment)
        .get("/payments/{id}", get_payment)
}

fn get_payment(app: &App, _req: &Request, params: &Params) -> Result<Response, HttpError> {
    let id = params.get("id").unwrap_or_default();
    match app.ledger.get_json::<Payment>(&ledger::payment_key(id))? {
        Some(p) => Ok(Response::json(200, &p)),
        None => Err(HttpError::not_found(format!("no payment with id `{id}`"))),
    }
}

fn create_payment(app: &App, req: &Request, _: &Params) -> Result<Response, HttpError> {
    let key = validate_idempotency_key(req.header("idempotency-key"))?;
    let new: NewPayment = req.json()?;
    validate(&new, app.config.max_amount)?;

    let request_hash = request_hash(&new);
    let id = payment_id(&new.merchant_id, key);
    let record_key = ledger::payment_key(&id);

    // A retry usually finds its payment already there: answer it without taking a
    // sequence number.
    if let Some(existing) = app.ledger.get_json::<Payment>(&record_key)? {
        return replay(app, existing, &request_hash);
    }

    let now = (app.now_ms)();
    let date = Date::at(now, IST_OFFSET_MINUTES).to_string();
    let seq = app.ledger.increment(&ledger::seq_key(&date), 1)?;
    let payment = Payment {
        id: id.clone(),
        fee: app.config.mdr.fee(new.amount),
        merchant_id: new.merchant_id,
        payer_vpa: new.payer_vpa,
        amount: new.amount,
        currency: new.currency,
        status: "captured".into(),
        created_at: format_rfc3339(now, IST_OFFSET_MINUTES),
        ledger_date: date,
        ledger_seq: seq as u64,
        idempotency_key: key.to_string(),
        request_hash,
    };
    match app
        .ledger
        .insert_if_absent(&record_key, &kv::encode(&payment)?)?
    {
        None => {
            write_index(app, &payment)?;
            Ok(Response::json(201, &payment).with_header("location", format!("/payments/{id}")))
        }
        Some(bytes) => {
            // Another request with the same key won the race; ours took only a gap.
            let existing: Payment = kv::decode(&record_key, &bytes)?;
            replay(app, existing, &payment.request_hash)
        }
    }
}

/// Answers a request whose payment already exists.
fn replay(app: &App, existing: Payment, request_hash: &str) -> Result<Response, HttpError> {
    if existing.request_hash != request_hash {
        return Err(HttpError::conflict(
            "idempotency_key_reused",
            format!(
                "Idempotency-Key `{}` was already used for a different payment ({}); use a new key for a new payment",
                existing.idempotency_key, existing.id
            ),
        ));
    }
    // The first request may have stopped between writing the payment and its index
    // entry; finishing that here makes the retry complete the ledger.
    write_index(app, &existing)?;
    Ok(Response::json(201, &existing)
        .with_header("location", format!("/payments/{}", existing.id))
        .with_header("idempotent-replayed", "true"))
}

fn write_index(app: &App, p: &Payment) -> Result<(), HttpError> {
    let key = ledger::index_key(&p.ledger_date, p.ledger_seq);
    if !app.ledger.exists(&key)? {
        app.ledger.set(&key, p.id.as_bytes())?;
    }
    Ok(())
}

/// `pay_` and 24 hex digits of SHA-256(merchant, key): stable across retries, unique per
/// merchant and key, and revealing neither.
pub fn payment_id(merchant_id: &str, idempotency_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(merchant_id.as_bytes());
    h.update([0]);
    h.update(idempotency_key.as_bytes());
    format!("pay_{}", hex(&h.finalize()[..12]))
}

/// SHA-256 of the request in canonical form, so whitespace or field order in the JSON do
/// not make a retry look like a different payment.
pub fn request_hash(p: &NewPayment) -> String {
    let canonical = serde_json::to_vec(p).expect("a NewPayment always serializes");
    hex(&Sha256::digest(&canonical))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dabba_sdk::Method;

    // 2026-11-25T10:00:00+05:30
    fn fixed_now() -> i64 {
        1_795_581_000_000
    }

    fn app() -> App {
        App {
            config: PaymentConfig::default(),
            ledger: Bucket::in_memory(),
            now_ms: fixed_now,
        }
    }

    fn post(key: Option<&str>, body: &str) -> Request {
        let mut r = Request::new(Method::Post, "/payments")
            .with_header("content-type", "application/json")
            .with_body(body);
        if let Some(k) = key {
            r = r.with_header("Idempotency-Key", k);
        }
        r
    }

    const BODY: &str =
        r#"{"merchant_id":"m1","payer_vpa":"asha@okhdfc","amount":250050,"currency":"INR"}"#;

    #[test]
    fn a_payment_is_created_with_its_fee_and_indexed() {
        let app = app();
        let resp = router().handle(&app, &post(Some("k1"), BODY));
        assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
        let p: Payment = resp.json_body().unwrap();
        assert_eq!(p.amount, 250_050);
        assert_eq!(p.fee, 2_751); // 1.1% of ₹2500.50 = 27.5055 → 27.51
        assert_eq!(p.ledger_date, "2026-11-25");
        assert_eq!(p.created_at, "2026-11-25T10:00:00.000+05:30");
        assert_eq!(
            app.ledger
                .get(&ledger::index_key("2026-11-25", p.ledger_seq))
                .unwrap()
                .unwrap(),
            p.id.as_bytes()
        );
        let got = router().handle(
            &app,
            &Request::new(Method::Get, &format!("/payments/{}", p.id)),
        );
        assert_eq!(got.json_body::<Payment>().unwrap(), p);
    }

    #[test]
    fn same_key_same_body_replays_without_writing() {
        let app = app();
        let first: Payment = router()
            .handle(&app, &post(Some("k1"), BODY))
            .json_body()
            .unwrap();
        let reordered = r#"{ "currency":"INR", "amount":250050, "payer_vpa":"asha@okhdfc", "merchant_id":"m1" }"#;
        let second = router().handle(&app, &post(Some("k1"), reordered));
        assert_eq!(second.status, 201);
        assert_eq!(second.header("idempotent-replayed"), Some("true"));
        assert_eq!(second.json_body::<Payment>().unwrap(), first);
        // No second sequence number was taken.
        assert_eq!(
            app.ledger
                .get(&ledger::seq_key("2026-11-25"))
                .unwrap()
                .unwrap(),
            b"1"
        );
    }

    #[test]
    fn same_key_different_body_is_409() {
        let app = app();
        router().handle(&app, &post(Some("k1"), BODY));
        let other = BODY.replace("250050", "250051");
        let resp = router().handle(&app, &post(Some("k1"), &other));
        assert_eq!(resp.status, 409);
        let v: serde_json::Value = resp.json_body().unwrap();
        assert_eq!(v["error"]["code"], "idempotency_key_reused");
    }

    #[test]
    fn the_same_key_for_different_merchants_is_two_payments() {
        let app = app();
        let a: Payment = router()
            .handle(&app, &post(Some("k1"), BODY))
            .json_body()
            .unwrap();
        let b: Payment = router()
            .handle(&app, &post(Some("k1"), &BODY.replace("\"m1\"", "\"m2\"")))
            .json_body()
            .unwrap();
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_lost_index_entry_is_repaired_by_the_retry() {
        let app = app();
        let p: Payment = router()
            .handle(&app, &post(Some("k1"), BODY))
            .json_body()
            .unwrap();
        let index = ledger::index_key(&p.ledger_date, p.ledger_seq);
        app.ledger.delete(&index).unwrap();
        assert_eq!(router().handle(&app, &post(Some("k1"), BODY)).status, 201);
        assert!(app.ledger.exists(&index).unwrap());
    }

    #[test]
    fn bad_requests_get_clear_errors() {
        let app = app();
        let cases = [
            (post(None, BODY), 400, "missing_idempotency_key"),
            (post(Some("k"), "{"), 400, "invalid_json"),
            (
                post(Some("k"), &BODY.replace("250050", "2500.50")),
                400,
                "invalid_json",
            ),
            (
                post(Some("k"), &BODY.replace("250050", "-5")),
                400,
                "invalid_json",
            ),
            (
                post(Some("k"), &BODY.replace("}", r#","tip":1}"#)),
                400,
                "invalid_json",
            ),
            (
                post(Some("k"), &BODY.replace("INR", "USD")),
                422,
                "unsupported_currency",
            ),
        ];
        for (req, status, code) in cases {
            let resp = router().handle(&app, &req);
            assert_eq!(
                resp.status,
                status,
                "{}",
                String::from_utf8_lossy(&resp.body)
            );
            let v: serde_json::Value = resp.json_body().unwrap();
            assert_eq!(v["error"]["code"], code);
        }
        // Nothing was written by any rejected request.
        assert_eq!(app.ledger.list_keys(None).unwrap().0.len(), 0);
    }

    #[test]
    fn concurrent_duplicates_make_exactly_one_payment() {
        use std::sync::Arc;
        let shared = Arc::new(App {
            config: PaymentConfig::default(),
            ledger: Bucket::open("payment-concurrency-test").unwrap(),
            now_ms: fixed_now,
        });
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let app = shared.clone();
                std::thread::spawn(move || {
                    let resp = router().handle(&app, &post(Some("dup"), BODY));
                    (resp.status, resp.json_body::<Payment>().unwrap().id)
                })
            })
            .collect();
        let results: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            results
                .iter()
                .all(|(s, id)| *s == 201 && *id == results[0].1)
        );
        let (keys, _) = shared.ledger.list_keys(None).unwrap();
        let index_entries = keys
            .iter()
            .filter(|k| k.starts_with("ledger/") && !k.ends_with("/seq"))
            .count();
        let payments = keys.iter().filter(|k| k.starts_with("payment/")).count();
        assert_eq!((index_entries, payments), (1, 1), "{keys:?}");
    }
}
