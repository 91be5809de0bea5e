//! The merchant discount rate (MDR): the fee a merchant pays per payment, by tier.
//!
//! A schedule is a list of tiers in ascending `up_to` order; the first tier whose `up_to`
//! (in paise, inclusive) covers the amount applies, and the last tier has no `up_to`.
//! The fee is `amount × bps / 10 000` rounded half up, plus `fixed` paise.

use ledger::Paise;
use ledger::money::bps_half_up;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdrTier {
    /// Largest amount (inclusive, paise) this tier covers; `null` for the last tier.
    pub up_to: Option<Paise>,
    /// Basis points of the amount (110 = 1.10%).
    pub bps: u32,
    /// A flat fee in paise added to the percentage.
    #[serde(default)]
    pub fixed: Paise,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdrRules(Vec<MdrTier>);

impl MdrRules {
    /// Validates a schedule: at least one tier, ascending `up_to`, only the last tier
    /// open-ended, and no rate above 100%.
    pub fn new(tiers: Vec<MdrTier>) -> Result<Self, String> {
        let Some(last) = tiers.last() else {
            return Err("needs at least one tier".into());
        };
        if last.up_to.is_some() {
            return Err("the last tier must have `up_to: null` so every amount is covered".into());
        }
        let mut prev: Option<Paise> = None;
        for (i, t) in tiers.iter().enumerate() {
            if t.bps > 10_000 {
                return Err(format!("tier {i}: bps {} is more than 100%", t.bps));
            }
            if i + 1 < tiers.len() {
                let Some(up_to) = t.up_to else {
                    return Err(format!("tier {i}: only the last tier may omit `up_to`"));
                };
                if prev.is_some_and(|p| up_to <= p) {
                    return Err(format!("tier {i}: `up_to` values must increase"));
                }
                prev = Some(up_to);
            }
        }
        Ok(MdrRules(tiers))
    }

    /// UPI person-to-merchant: no MDR up to ₹2,000; 1.1% above (the interchange on
    /// wallet-funded payments).
    pub fn upi_default() -> Self {
        MdrRules(vec![
            MdrTier {
                up_to: Some(2_000_00),
                bps: 0,
                fixed: 0,
            },
            MdrTier {
                up_to: None,
                bps: 110,
                fixed: 0,
            },
        ])
    }

    pub fn fee(&self, amount: Paise) -> Paise {
        let tier = self
            .0
            .iter()
            .find(|t| t.up_to.is_none_or(|u| amount <= u))
            .unwrap_or_else(|| self.0.last().expect("validated: at least one tier"));
        bps_half_up(amount, tier.bps).saturating_add(tier.fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upi_default_is_free_up_to_two_thousand_rupees() {
        let r = MdrRules::upi_default();
        assert_eq!(r.fee(2_000_00), 0);
        assert_eq!(r.fee(2_000_01), 2_200); // 1.1% of 2000.01 = 22.00011 → 22.00
        assert_eq!(r.fee(10_000_00), 11_000);
    }

    #[test]
    fn bad_schedules_are_rejected() {
        let t = |up_to, bps| MdrTier {
            up_to,
            bps,
            fixed: 0,
        };
        assert!(MdrRules::new(vec![]).is_err());
        assert!(MdrRules::new(vec![t(Some(100), 0)]).is_err());
        assert!(MdrRules::new(vec![t(None, 0), t(None, 1)]).is_err());
        assert!(MdrRules::new(vec![t(Some(100), 0), t(Some(50), 0), t(None, 1)]).is_err());
        assert!(MdrRules::new(vec![t(None, 10_001)]).is_err());
        assert!(MdrRules::new(vec![t(Some(100), 0), t(None, 100)]).is_ok());
    }
}
