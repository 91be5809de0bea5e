//! The payment API's configuration: the per-transaction cap, the MDR fee schedule and
//! the bucket holding the ledger. Read from `wasi:config` keys, with defaults that match
//! UPI's published rules for person-to-merchant payments.

use dabba_sdk::config;
use ledger::Paise;

use crate::fee::{MdrRules, MdrTier};

/// Per-transaction cap by default: ₹1,00,000 (the general UPI limit).
pub const DEFAULT_MAX_AMOUNT: Paise = 100_000_00;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentConfig {
    /// The largest amount one payment may carry, in paise (`max_amount_paise`).
    pub max_amount: Paise,
    /// The fee schedule (`mdr_rules`, a JSON list of tiers).
    pub mdr: MdrRules,
    /// The `wasi:keyvalue` bucket holding the ledger (`bucket`).
    pub bucket: String,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            max_amount: DEFAULT_MAX_AMOUNT,
            mdr: MdrRules::upi_default(),
            bucket: "default".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(transparent)]
    Source(#[from] config::ConfigError),
}

impl PaymentConfig {
    /// Reads the configuration through `lookup`, falling back to defaults.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Result<Option<String>, config::ConfigError>,
    ) -> Result<Self, ConfigError> {
        let mut c = PaymentConfig::default();
        if let Some(v) = lookup("max_amount_paise")? {
            c.max_amount = v.trim().parse().map_err(|_| ConfigError::Invalid {
                key: "max_amount_paise",
                message: format!("`{v}` is not a whole number of paise"),
            })?;
        }
        if let Some(v) = lookup("mdr_rules")? {
            let tiers: Vec<MdrTier> =
                serde_json::from_str(&v).map_err(|e| ConfigError::Invalid {
                    key: "mdr_rules",
                    message: e.to_string(),
                })?;
            c.mdr = MdrRules::new(tiers).map_err(|message| ConfigError::Invalid {
                key: "mdr_rules",
                message,
            })?;
        }
        if let Some(v) = lookup("bucket")? {
            c.bucket = v;
        }
        Ok(c)
    }

    /// The configuration this component was given.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_lookup(config::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = PaymentConfig::from_lookup(|_| Ok(None)).unwrap();
        assert_eq!(c, PaymentConfig::default());
    }

    #[test]
    fn values_are_read_and_bad_ones_named() {
        let c = PaymentConfig::from_lookup(|k| {
            Ok(match k {
                "max_amount_paise" => Some("5000".into()),
                "mdr_rules" => Some(r#"[{"up_to": null, "bps": 200, "fixed": 100}]"#.into()),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(c.max_amount, 5000);
        assert_eq!(c.mdr.fee(10_000), 300);
        let err = PaymentConfig::from_lookup(|k| {
            Ok((k == "max_amount_paise").then(|| "lots".to_string()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_amount_paise"), "{err}");
    }
}
