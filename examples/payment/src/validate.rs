//! Validation of a payment request: every rule that can reject a payment before any state
//! is touched, each with its own error code.

use ledger::Paise;
use serde::{Deserialize, Serialize};

use dabba_sdk::HttpError;

/// The body of `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    pub merchant_id: String,
    /// The payer's UPI virtual payment address, `handle@psp`.
    pub payer_vpa: String,
    /// Amount in paise: a positive integer (₹10.50 is `1050`).
    pub amount: Paise,
    pub currency: String,
}

/// Currencies this API accepts.
pub const CURRENCIES: &[&str] = &["INR"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("amount must be a positive number of paise")]
    NonPositiveAmount,
    #[error("amount {amount} paise is above the per-transaction limit of {max} paise")]
    AmountTooLarge { amount: Paise, max: Paise },
    #[error(
        "payer_vpa `{0}` is not a valid UPI address: expected handle@psp, where the handle is 2-256 letters, digits, '.', '-' or '_' and the psp 2-64 letters or digits"
    )]
    InvalidVpa(String),
    #[error("currency `{0}` is not supported: expected one of INR")]
    UnsupportedCurrency(String),
    #[error("merchant_id `{0}` is not valid: expected 1-64 letters, digits, '-' or '_'")]
    InvalidMerchant(String),
    #[error(
        "the Idempotency-Key header is required: send a unique key (for example a UUID) per payment"
    )]
    MissingIdempotencyKey,
    #[error("the Idempotency-Key header must be 1-255 visible ASCII characters")]
    InvalidIdempotencyKey,
}

impl From<Rejection> for HttpError {
    fn from(r: Rejection) -> Self {
        let code = match &r {
            Rejection::NonPositiveAmount => "invalid_amount",
            Rejection::AmountTooLarge { .. } => "amount_too_large",
            Rejection::InvalidVpa(_) => "invalid_vpa",
            Rejection::UnsupportedCurrency(_) => "unsupported_currency",
            Rejection::InvalidMerchant(_) => "invalid_merchant",
            Rejection::MissingIdempotencyKey => "missing_idempotency_key",
            Rejection::InvalidIdempotencyKey => "invalid_idempotency_key",
        };
        let status = match r {
            Rejection::MissingIdempotencyKey | Rejection::InvalidIdempotencyKey => 400,
            _ => 422,
        };
        HttpError::new(status, code, r.to_string())
    }
}

pub fn validate(p: &NewPayment, max_amount: Paise) -> Result<(), Rejection> {
    if !valid_merchant(&p.merchant_id) {
        return Err(Rejection::InvalidMerchant(p.merchant_id.clone()));
    }
    if !valid_vpa(&p.payer_vpa) {
        return Err(Rejection::InvalidVpa(p.payer_vpa.clone()));
    }
    if !CURRENCIES.contains(&p.currency.as_str()) {
        return Err(Rejection::UnsupportedCurrency(p.currency.clone()));
    }
    if p.amount == 0 {
        return Err(Rejection::NonPositiveAmount);
    }
    if p.amount > max_amount {
        return Err(Rejection::AmountTooLarge {
            amount: p.amount,
            max: max_amount,
        });
    }
    Ok(())
}

pub fn validate_idempotency_key(key: Option<&str>) -> Result<&str, Rejection> {
    let key = key.ok_or(Rejection::MissingIdempotencyKey)?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::InvalidIdempotencyKey);
    }
    Ok(key)
}

/// `handle@psp`: NPCI's format for a virtual payment address.
pub fn valid_vpa(vpa: &str) -> bool {
    let Some((handle, psp)) = vpa.split_once('@') else {
        return false;
    };
    (2..=256).contains(&handle.len())
        && handle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && (2..=64).contains(&psp.len())
        && psp.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_merchant(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> NewPayment {
        NewPayment {
            merchant_id: "m_chai_point".into(),
            payer_vpa: "ravi.kumar@okaxis".into(),
            amount: 25_000,
            currency: "INR".into(),
        }
    }

    #[test]
    fn a_good_payment_passes() {
        assert_eq!(validate(&ok(), 100_000_00), Ok(()));
    }

    #[test]
    fn each_rule_rejects_with_its_own_code() {
        let cases: Vec<(NewPayment, &str)> = vec![
            (NewPayment { amount: 0, ..ok() }, "invalid_amount"),
            (
                NewPayment {
                    amount: 100_000_01,
                    ..ok()
                },
                "amount_too_large",
            ),
            (
                NewPayment {
                    payer_vpa: "ravi".into(),
                    ..ok()
                },
                "invalid_vpa",
            ),
            (
                NewPayment {
                    payer_vpa: "r@okaxis".into(),
                    ..ok()
                },
                "invalid_vpa",
            ),
            (
                NewPayment {
                    payer_vpa: "ravi@ok axis".into(),
                    ..ok()
                },
                "invalid_vpa",
            ),
            (
                NewPayment {
                    payer_vpa: "ravi@a@b".into(),
                    ..ok()
                },
                "invalid_vpa",
            ),
            (
                NewPayment {
                    currency: "USD".into(),
                    ..ok()
                },
                "unsupported_currency",
            ),
            (
                NewPayment {
                    merchant_id: "".into(),
                    ..ok()
                },
                "invalid_merchant",
            ),
            (
                NewPayment {
                    merchant_id: "m/1".into(),
                    ..ok()
                },
                "invalid_merchant",
            ),
        ];
        for (p, code) in cases {
            let err: HttpError = validate(&p, 100_000_00).unwrap_err().into();
            assert_eq!(err.code, code, "{p:?}");
            assert_eq!(err.status, 422);
        }
    }

    #[test]
    fn idempotency_keys_are_required_and_bounded() {
        assert_eq!(
            validate_idempotency_key(None),
            Err(Rejection::MissingIdempotencyKey)
        );
        assert_eq!(
            validate_idempotency_key(Some("")),
            Err(Rejection::InvalidIdempotencyKey)
        );
        assert_eq!(
            validate_idempotency_key(Some("a b")),
            Err(Rejection::InvalidIdempotencyKey)
        );
        let long = "k".repeat(256);
        assert!(validate_idempotency_key(Some(&long)).is_err());
        assert_eq!(validate_idempotency_key(Some("7f3c-11")), Ok("7f3c-11"));
    }
}
