//! A synthetic day of payments, for the settlement benchmark: deterministic from a seed,
//! shaped like the payment API's own records (same fields, same key layout, same fee
//! arithmetic), so the settlement job cannot tell them from real ones.

use crate::{Paise, Payment, index_key, money::bps_half_up, payment_key, seq_key};

/// One generated day: its payments come from [`Day::payment`], one per sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day<'a> {
    /// `YYYY-MM-DD`, the IST date the payments are settled under.
    pub date: &'a str,
    pub payments: u64,
    pub merchants: u64,
    pub seed: u64,
}

/// splitmix64: a tiny, well-mixed generator, so payment `n` is computed directly.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Day<'_> {
    /// Payment number `seq` (1-based) of the day.
    pub fn payment(&self, seq: u64) -> Payment {
        let r = mix(self.seed ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let merchant = r % self.merchants.max(1);
        // ₹1 to ₹50,000, skewed small as real UPI traffic is.
        let amount: Paise = 100 + (r >> 20) % 50_000_00 / (1 + (r >> 60) % 8);
        // 1.1% above ₹2,000, free below (the payment API's default UPI schedule).
        let fee = if amount > 2_000_00 {
            bps_half_up(amount, 110)
        } else {
            0
        };
        let second = seq * 86_399 / self.payments.max(1);
        Payment {
            id: format!("pay_{:016x}", mix(r)),
            merchant_id: format!("m_{merchant:05}"),
            payer_vpa: format!("payer{}@okaxis", (r >> 8) % 100_000),
            amount,
            currency: "INR".into(),
            fee,
            status: "captured".into(),
            created_at: format!(
                "{}T{:02}:{:02}:{:02}+05:30",
                self.date,
                second / 3600,
                second / 60 % 60,
                second % 60
            ),
            ledger_date: self.date.to_string(),
            ledger_seq: seq,
            idempotency_key: format!("idem-{seq}-{:08x}", r as u32),
            request_hash: format!(
                "{:016x}{:016x}{:016x}{:016x}",
                r,
                mix(r ^ 1),
                mix(r ^ 2),
                mix(r ^ 3)
            ),
        }
    }

    /// The day's sequence numbers in batches of at most `size`: `(from, to)`, inclusive.
    pub fn batches(&self, size: u64) -> impl Iterator<Item = (u64, u64)> + use<> {
        let (last, size) = (self.payments, size.max(1));
        (0..last.div_ceil(size)).map(move |i| (i * size + 1, ((i + 1) * size).min(last)))
    }

    /// The key-value pairs payments `from..=to` add to the ledger bucket: each payment's
    /// record and its index entry.
    pub fn entries(&self, from: u64, to: u64) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::with_capacity(2 * (to + 1 - from) as usize);
        for seq in from..=to {
            let p = self.payment(seq);
            out.push((index_key(self.date, seq), p.id.clone().into_bytes()));
            let json = serde_json::to_vec(&p).expect("a payment serializes");
            out.push((payment_key(&p.id), json));
        }
        out
    }

    /// The ledger's sequence counter once every payment is in.
    pub fn seq_entry(&self) -> (String, Vec<u8>) {
        (seq_key(self.date), self.payments.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_the_same_every_time_and_shaped_like_the_api_records() {
        let day = Day {
            date: "2026-11-25",
            payments: 1_000,
            merchants: 10,
            seed: 7,
        };
        assert_eq!(day.payment(5), day.payment(5));
        assert_ne!(day.payment(5).id, day.payment(6).id);
        let p = day.payment(1_000);
        assert_eq!(p.ledger_seq, 1_000);
        assert!(p.merchant_id.starts_with("m_"));
        assert!(p.amount >= 100 && p.amount <= 50_000_00, "{p:?}");
        assert!(
            p.created_at.starts_with("2026-11-25T23:59"),
            "{}",
            p.created_at
        );
        let ids: std::collections::BTreeSet<String> =
            (1..=1_000).map(|s| day.payment(s).id).collect();
        assert_eq!(ids.len(), 1_000, "ids are distinct");
        let charged = (1..=1_000).filter(|s| day.payment(*s).fee > 0).count();
        assert!(
            charged > 100 && charged < 900,
            "{charged} of 1000 pay a fee"
        );
        let batches: Vec<(u64, u64)> = day.batches(300).collect();
        assert_eq!(batches, [(1, 300), (301, 600), (601, 900), (901, 1000)]);
        let entries = day.entries(1, 2);
        assert_eq!(entries[0].0, "ledger/2026-11-25/0000000001");
        assert_eq!(entries[1].0, format!("payment/{}", day.payment(1).id));
    }
}
