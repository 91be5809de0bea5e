//! Sample workload: the nightly merchant settlement.
//!
//! For one IST calendar date it reads every payment in the ledger, computes per merchant
//! the gross amount, the MDR fees, GST at 18% on the fees and the net payable, and writes
//! one settlement record per merchant and a report, in one atomic batch.
//!
//! Settling a date twice changes nothing: the second run recomputes the totals, finds
//! the same report already written, says so and exits 0. If the ledger changed after the
//! date was settled (a late payment), the run refuses to overwrite the report and fails,
//! because money already paid out must be reconciled by a person, not silently redone.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written rupees_paise: 2_000_00 is ₹2,000.00"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dabba_sdk::kv::{self, Bucket, KvError};
use dabba_sdk::time::{Date, IST_OFFSET_MINUTES, parse_rfc3339};
use ledger::{MerchantSettlement, Payment, SettlementReport, format_rupees, gst_on};

/// Keys read per `get-many` call.
const BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("ledger entry `{key}` is damaged: {message}")]
    Corrupt { key: String, message: String },
    #[error(
        "{date} was already settled with different totals (recorded: {recorded_payments} payments, net ₹{recorded_net}; ledger now: {now_payments} payments, net ₹{now_net}); refusing to overwrite a settlement that may have been paid out"
    )]
    LedgerChanged {
        date: String,
        recorded_payments: u64,
        recorded_net: String,
        now_payments: u64,
        now_net: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The date is now settled with this report.
    Settled(SettlementReport),
    /// The date was already settled with exactly these totals; nothing was written.
    AlreadySettled(SettlementReport),
}

/// Settles `date` (`YYYY-MM-DD`, IST).
pub fn settle(bucket: &Bucket, date: Date) -> Result<Outcome, SettleError> {
    let date = date.to_string();
    let report = compute(bucket, &date)?;
    let report_key = ledger::report_key(&date);
    if let Some(recorded) = bucket.get_json::<SettlementReport>(&report_key)? {
        if recorded == report {
            return Ok(Outcome::AlreadySettled(report));
        }
        return Err(SettleError::LedgerChanged {
            date,
            recorded_payments: recorded.payments,
            recorded_net: format_rupees(recorded.net),
            now_payments: report.payments,
            now_net: format_rupees(report.net),
        });
    }
    let mut writes = Vec::with_capacity(report.merchants.len() + 1);
    for m in &report.merchants {
        writes.push((
            ledger::merchant_settlement_key(&date, &m.merchant_id),
            kv::encode(m)?,
        ));
    }
    writes.push((report_key, kv::encode(&report)?));
    bucket.set_many(&writes)?;
    Ok(Outcome::Settled(report))
}

/// Computes the settlement of `date` from the ledger without writing anything.
pub fn compute(bucket: &Bucket, date: &str) -> Result<SettlementReport, SettleError> {
    let seq_key = ledger::seq_key(date);
    let last_seq: u64 = match bucket.get(&seq_key)? {
        None => 0,
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SettleError::Corrupt {
                key: seq_key.clone(),
                message: "not a counter".into(),
            })?,
    };
    let mut per_merchant: BTreeMap<String, MerchantSettlement> = BTreeMap::new();
    let mut payments = 0u64;
    let mut first = 1u64;
    while first <= last_seq {
        let last = (first + BATCH as u64 - 1).min(last_seq);
        let index_keys: Vec<String> = (first..=last).map(|s| ledger::index_key(date, s)).collect();
        // Gaps (a lost idempotency race, a request that stopped early) have no entry.
        let ids: Vec<String> = bucket
            .get_many(&index_keys)?
            .into_iter()
            .filter_map(|(key, v)| v.map(|v| (key, v)))
            .map(|(key, v)| {
                String::from_utf8(v).map_err(|_| SettleError::Corrupt {
                    key,
                    message: "payment id is not UTF-8".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        let record_keys: Vec<String> = ids.iter().map(|id| ledger::payment_key(id)).collect();
        for (key, value) in bucket.get_many(&record_keys)? {
            let bytes = value.ok_or_else(|| SettleError::Corrupt {
                key: key.clone(),
                message: "indexed in the ledger but the payment record is missing".into(),
            })?;
            let p: Payment = kv::decode(&key, &bytes)?;
            if p.ledger_date != date {
                return Err(SettleError::Corrupt {
                    key,
                    message: format!("indexed under {date} but dated {}", p.ledger_date),
                });
            }
            let m = per_merchant
                .entry(p.merchant_id.clone())
                .or_insert_with(|| MerchantSettlement {
                    merchant_id: p.merchant_id.clone(),
                    date: date.to_string(),
                    payments: 0,
                    gross: 0,
                    fees: 0,
                    gst: 0,
                    net: 0,
                });
            m.payments += 1;
            m.gross += p.amount;
            m.fees += p.fee;
            payments += 1;
        }
        first = last + 1;
    }
    let mut report = SettlementReport {
        date: date.to_string(),
        payments,
        merchants: Vec::with_capacity(per_merchant.len()),
        gross: 0,
        fees: 0,
        gst: 0,
        net: 0,
    };
    for (_, mut m) in per_merchant {
        m.gst = gst_on(m.fees);
        m.net = m.gross.saturating_sub(m.fees).saturating_sub(m.gst);
        report.gross += m.gross;
        report.fees += m.fees;
        report.gst += m.gst;
        report.net += m.net;
        report.merchants.push(m);
    }
    Ok(report)
}

/// The date a run scheduled at `scheduled` settles: the IST calendar day before it.
/// A run scheduled at 01:00 IST on the 26th settles the 25th.
pub fn date_for_schedule(scheduled: &str) -> Result<Date, String> {
    let (ms, _) = parse_rfc3339(scheduled).map_err(|e| e.to_string())?;
    Ok(Date::at(ms, IST_OFFSET_MINUTES).pred())
}

/// The human summary printed by the job.
pub fn summary(report: &SettlementReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "settlement for {} (IST): {} payments from {} merchants",
        report.date,
        report.payments,
        report.merchants.len()
    );
    let _ = writeln!(
        s,
        "{:<24} {:>9} {:>15} {:>12} {:>11} {:>15}",
        "merchant", "payments", "gross", "fees", "gst", "net"
    );
    let line = |s: &mut String, name: &str, n: u64, g: u64, f: u64, t: u64, net: u64| {
        let _ = writeln!(
            s,
            "{:<24} {:>9} {:>15} {:>12} {:>11} {:>15}",
            name,
            n,
            format_rupees(g),
            format_rupees(f),
            format_rupees(t),
            format_rupees(net)
        );
    };
    for m in &report.merchants {
        line(
            &mut s,
            &m.merchant_id,
            m.payments,
            m.gross,
            m.fees,
            m.gst,
            m.net,
        );
    }
    line(
        &mut s,
        "TOTAL",
        report.payments,
        report.gross,
        report.fees,
        report.gst,
        report.net,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::Payment;

    fn pay(b: &Bucket, date: &str, seq: u64, merchant: &str, amount: u64, fee: u64) {
        let p = Payment {
            id: format!("pay_{date}_{seq}"),
            merchant_id: merchant.into(),
            payer_vpa: "x@y1".into(),
            amount,
            currency: "INR".into(),
            fee,
            status: "captured".into(),
            created_at: format!("{date}T10:00:00.000+05:30"),
            ledger_date: date.into(),
            ledger_seq: seq,
            idempotency_key: format!("k{seq}"),
            request_hash: "h".into(),
        };
        b.set_json(&ledger::payment_key(&p.id), &p).unwrap();
        b.set(&ledger::index_key(date, seq), p.id.as_bytes())
            .unwrap();
        let n = b.increment(&ledger::seq_key(date), 0).unwrap();
        if (n as u64) < seq {
            b.increment(&ledger::seq_key(date), seq as i64 - n).unwrap();
        }
    }

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn totals_on_a_known_ledger() {
        let b = Bucket::in_memory();
        pay(&b, "2026-11-25", 1, "m_a", 100_000, 0);
        pay(&b, "2026-11-25", 2, "m_a", 300_000, 3_300);
        pay(&b, "2026-11-25", 4, "m_b", 250_050, 2_751); // seq 3 is a gap
        pay(&b, "2026-11-26", 1, "m_a", 999_999, 11_000); // another day
        let Outcome::Settled(r) = settle(&b, d("2026-11-25")).unwrap() else {
            panic!("expected a fresh settlement");
        };
        assert_eq!(r.payments, 3);
        let a = &r.merchants[0];
        assert_eq!(
            (a.merchant_id.as_str(), a.payments, a.gross, a.fees),
            ("m_a", 2, 400_000, 3_300)
        );
        assert_eq!(a.gst, 594); // 18% of 33.00 = 5.94
        assert_eq!(a.net, 400_000 - 3_300 - 594);
        let m_b = &r.merchants[1];
        assert_eq!(m_b.gst, 495); // 18% of 27.51 = 4.9518 → 4.95
        assert_eq!(r.net, a.net + m_b.net);
        assert_eq!(r.gross, 650_050);
        let stored: SettlementReport = b
            .get_json(&ledger::report_key("2026-11-25"))
            .unwrap()
            .unwrap();
        assert_eq!(stored, r);
        let ms: MerchantSettlement = b
            .get_json(&ledger::merchant_settlement_key("2026-11-25", "m_b"))
            .unwrap()
            .unwrap();
        assert_eq!(&ms, m_b);
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let b = Bucket::in_memory();
        pay(&b, "2026-11-25", 1, "m_a", 100_000, 1_100);
        let Outcome::Settled(first) = settle(&b, d("2026-11-25")).unwrap() else {
            panic!()
        };
        let before = b.list_keys(None).unwrap().0;
        let again = settle(&b, d("2026-11-25")).unwrap();
        assert_eq!(again, Outcome::AlreadySettled(first));
        assert_eq!(b.list_keys(None).unwrap().0, before);
    }

    #[test]
    fn a_changed_ledger_is_not_silently_resettled() {
        let b = Bucket::in_memory();
        pay(&b, "2026-11-25", 1, "m_a", 100_000, 1_100);
        settle(&b, d("2026-11-25")).unwrap();
        pay(&b, "2026-11-25", 2, "m_a", 5_000, 0);
        let err = settle(&b, d("2026-11-25")).unwrap_err();
        assert!(matches!(err, SettleError::LedgerChanged { .. }), "{err}");
    }

    #[test]
    fn an_empty_day_settles_to_zero() {
        let b = Bucket::in_memory();
        let Outcome::Settled(r) = settle(&b, d("2026-01-01")).unwrap() else {
            panic!()
        };
        assert_eq!((r.payments, r.net, r.merchants.len()), (0, 0, 0));
    }

    #[test]
    fn a_dangling_index_entry_is_reported() {
        let b = Bucket::in_memory();
        b.set(&ledger::index_key("2026-11-25", 1), b"pay_missing")
            .unwrap();
        b.increment(&ledger::seq_key("2026-11-25"), 1).unwrap();
        let err = compute(&b, "2026-11-25").unwrap_err();
        assert!(err.to_string().contains("payment/pay_missing"), "{err}");
    }

    #[test]
    fn scheduled_time_settles_the_previous_ist_day() {
        assert_eq!(
            date_for_schedule("2026-11-26T01:00:00+05:30").unwrap(),
            d("2026-11-25")
        );
        // 19:30Z on the 25th is 01:00 IST on the 26th.
        assert_eq!(
            date_for_schedule("2026-11-25T19:30:00Z").unwrap(),
            d("2026-11-25")
        );
        assert_eq!(
            date_for_schedule("2026-03-01T01:00:00+05:30").unwrap(),
            d("2026-02-28")
        );
        assert!(date_for_schedule("yesterday").is_err());
    }

    #[test]
    fn settles_what_the_payment_api_wrote() {
        use dabba_sdk::{Method, Request};
        let app = payment::api::App {
            config: payment::config::PaymentConfig::default(),
            ledger: Bucket::in_memory(),
            now_ms: || 1_795_581_000_000, // 2026-11-25T10:00+05:30
        };
        let mut expected_gross = 0;
        let mut expected_fees = 0;
        for i in 0..50u64 {
            let amount = 10_000 + i * 7_919;
            let body = format!(
                r#"{{"merchant_id":"m{}","payer_vpa":"p{i}@okicici","amount":{amount},"currency":"INR"}}"#,
                i % 3
            );
            let req = Request::new(Method::Post, "/payments")
                .with_header("idempotency-key", &format!("key-{i}"))
                .with_body(body);
            let resp = payment::api::router().handle(&app, &req);
            assert_eq!(resp.status, 201);
            expected_gross += amount;
            expected_fees += resp.json_body::<Payment>().unwrap().fee;
        }
        let r = compute(&app.ledger, "2026-11-25").unwrap();
        assert_eq!(
            (r.payments, r.gross, r.fees),
            (50, expected_gross, expected_fees)
        );
        assert_eq!(r.merchants.len(), 3);
    }
}
