//! The ledger: what the payment API writes and the settlement job reads.
//!
//! Both sides share this crate so the key layout and the record format are defined once.
//! Money is always an integer number of paise (`u64`); no float ever touches it.
//!
//! Key layout in the bucket:
//!
//! | key | value |
//! |---|---|
//! | `payment/{id}` | the [`Payment`] as JSON; written once, by compare-and-swap |
//! | `ledger/{date}/seq` | counter of sequence numbers handed out for `date` (IST) |
//! | `ledger/{date}/{seq:010}` | the payment id holding that sequence number |
//! | `settlement/{date}/report` | the [`SettlementReport`] of `date` |
//! | `settlement/{date}/merchant/{merchant_id}` | that merchant's [`MerchantSettlement`] |
//!
//! A sequence number is taken before the payment is written, so a lost idempotency race
//! or a crash leaves a gap; readers skip gaps. A payment is in the ledger once its index
//! entry exists, and the API writes that entry before it answers 2xx.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written rupees_paise: 2_000_00 is ₹2,000.00"
)]

use serde::{Deserialize, Serialize};

pub mod money;
pub mod synthetic;

pub use money::{Paise, format_rupees};

/// A captured payment, as stored and as returned by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub merchant_id: String,
    pub payer_vpa: String,
    /// Amount in paise.
    pub amount: Paise,
    pub currency: String,
    /// The merchant discount (MDR fee) in paise, charged at settlement.
    pub fee: Paise,
    pub status: String,
    /// RFC 3339 in IST.
    pub created_at: String,
    /// The IST calendar date the payment is settled under.
    pub ledger_date: String,
    /// The payment's sequence number within `ledger_date`.
    pub ledger_seq: u64,
    pub idempotency_key: String,
    /// SHA-256 of the canonical request; a retry with the same key must match it.
    pub request_hash: String,
}

/// One merchant's settlement for one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantSettlement {
    pub merchant_id: String,
    pub date: String,
    pub payments: u64,
    pub gross: Paise,
    pub fees: Paise,
    /// GST at 18% on the day's fees, rounded half up to the paisa.
    pub gst: Paise,
    /// What the merchant is paid: gross − fees − GST.
    pub net: Paise,
}

/// The settlement of one day across merchants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    pub date: String,
    pub payments: u64,
    pub merchants: Vec<MerchantSettlement>,
    pub gross: Paise,
    pub fees: Paise,
    pub gst: Paise,
    pub net: Paise,
}

/// GST on fees, in percent.
pub const GST_PERCENT: u64 = 18;

pub fn payment_key(id: &str) -> String {
    format!("payment/{id}")
}

pub fn seq_key(date: &str) -> String {
    format!("ledger/{date}/seq")
}

pub fn index_key(date: &str, seq: u64) -> String {
    format!("ledger/{date}/{seq:010}")
}

pub fn report_key(date: &str) -> String {
    format!("settlement/{date}/report")
}

pub fn merchant_settlement_key(date: &str, merchant_id: &str) -> String {
    format!("settlement/{date}/merchant/{merchant_id}")
}

/// GST on `fees`, rounded half up.
pub fn gst_on(fees: Paise) -> Paise {
    money::percent_half_up(fees, GST_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_sequence() {
        let mut keys: Vec<String> = [10, 2, 1_000_000, 33]
            .iter()
            .map(|s| index_key("2026-11-25", *s))
            .collect();
        keys.sort();
        assert_eq!(keys[0], "ledger/2026-11-25/0000000002");
        assert_eq!(keys[3], "ledger/2026-11-25/0001000000");
    }

    #[test]
    fn gst_is_eighteen_percent_half_up() {
        assert_eq!(gst_on(100), 18);
        assert_eq!(gst_on(3), 1); // 0.54 → 1
        assert_eq!(gst_on(2), 0); // 0.36 → 0
        assert_eq!(gst_on(25), 5); // 4.5 → 5
        assert_eq!(gst_on(0), 0);
    }
}
