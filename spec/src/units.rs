//! Human units for sizes and durations: `64Mi`, `512Ki`, `2G`, `250ms`, `5s`, `1m30s`.
//!
//! Every limit in a manifest or on the command line is written in these units, so they
//! are parsed in exactly one place and the error says which part of the text was wrong.
//! Both types serialize back to their canonical text, so a manifest round-trips.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a size or duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty value: expected a {what} such as {example}")]
    Empty {
        what: &'static str,
        example: &'static str,
    },
    #[error(
        "`{text}` is not a {what}: expected a whole number followed by a unit, such as {example}"
    )]
    Malformed {
        text: String,
        what: &'static str,
        example: &'static str,
    },
    #[error("`{text}` has an unknown unit `{unit}`: expected one of {expected}")]
    UnknownUnit {
        text: String,
        unit: String,
        expected: &'static str,
    },
    #[error("`{text}` is too large")]
    Overflow { text: String },
}

const SIZE_UNITS: &str = "B, Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000)";
const DURATION_UNITS: &str = "ms, s, m, h (e.g. 250ms, 5s, 1m30s)";

/// A number of bytes, written as `64Mi`, `512Ki`, `1G` or plain `1048576`.
///
/// Binary suffixes (`Ki`, `Mi`, `Gi`, `Ti`) are powers of 1024 and decimal suffixes
/// (`K`, `M`, `G`, `T`) powers of 1000, as in Kubernetes resource quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn bytes(n: u64) -> Self {
        ByteSize(n)
    }
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024 * 1024)
    }
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The size as a `usize`, saturating on 32-bit hosts.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "size";
        const EXAMPLE: &str = "`64Mi` or `512Ki`";
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(UnitError::Empty {
                what: WHAT,
                example: EXAMPLE,
            });
        }
        let (digits, unit) = split_number(trimmed);
        if digits.is_empty() {
            return Err(UnitError::Malformed {
                text: text.to_string(),
                what: WHAT,
                example: EXAMPLE,
            });
        }
        let n: u64 = digits.parse().map_err(|_| UnitError::Overflow {
            text: text.to_string(),
        })?;
        let factor: u64 = match unit {
            "" | "B" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "K" | "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            other => {
                return Err(UnitError::UnknownUnit {
                    text: text.to_string(),
                    unit: other.to_string(),
                    expected: SIZE_UNITS,
                });
            }
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| UnitError::Overflow {
                text: text.to_string(),
            })
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact binary form: `64Mi`, `1536Ki`, `100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
            let unit = 1u64 << shift;
            if n != 0 && n.is_multiple_of(unit) {
                return write!(f, "{}{}", n / unit, suffix);
            }
        }
        write!(f, "{n}")
    }
}

/// A span of time, written as `250ms`, `5s`, `2m`, `1h` or a sum such as `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "duration";
        const EXAMPLE: &str = "`5s` or `250ms`";
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(UnitError::Empty {
                what: WHAT,
                example: EXAMPLE,
            });
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let (digits, after) = split_number(rest);
            if digits.is_empty() {
                return Err(UnitError::Malformed {
                    text: text.to_string(),
                    what: WHAT,
                    example: EXAMPLE,
                });
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(after.len());
            let unit = &after[..unit_len];
            let per_unit_ms: u64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "" => {
                    return Err(UnitError::Malformed {
                        text: text.to_string(),
                        what: WHAT,
                        example: EXAMPLE,
                    });
                }
                other => {
                    return Err(UnitError::UnknownUnit {
                        text: text.to_string(),
                        unit: other.to_string(),
                        expected: DURATION_UNITS,
                    });
                }
            };
            let overflow = || UnitError::Overflow {
                text: text.to_string(),
            };
            let n: u64 = digits.parse().map_err(|_| overflow())?;
            let part = n.checked_mul(per_unit_ms).ok_or_else(overflow)?;
            total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
            rest = &after[unit_len..];
        }
        Ok(HumanDuration(Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for HumanDuration {
    /// The canonical form: `1m30s`, `250ms`, `2h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit_ms, suffix) in [(3_600_000u128, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] {
            if ms >= unit_ms {
                write!(f, "{}{}", ms / unit_ms, suffix)?;
                ms %= unit_ms;
            }
        }
        Ok(())
    }
}

/// Splits `64Mi` into (`64`, `Mi`).
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..end], &text[end..])
}

macro_rules! serde_via_text {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        Err(E::custom(format!(
                            "a bare number ({v}) has no unit: write it as a string with a unit, e.g. {}",
                            $expecting
                        )))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_u64(v.unsigned_abs())
                    }
                }
                d.deserialize_any(Visitor)
            }
        }
    };
}

serde_via_text!(ByteSize, "a size such as \"64Mi\"");
serde_via_text!(HumanDuration, "a duration such as \"5s\"");

/// A percent written `"25%"` (0 to 100), for `#[serde(with = "crate::units::percent")]`
/// on a `u32`.
pub mod percent {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{p}%"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        text.strip_suffix('%')
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| *n <= 100)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not a percent like `25%`"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!("64Mi".parse::<ByteSize>().unwrap(), ByteSize::mib(64));
        assert_eq!("512Ki".parse::<ByteSize>().unwrap(), ByteSize::kib(512));
        assert_eq!("2Gi".parse::<ByteSize>().unwrap(), ByteSize::gib(2));
        assert_eq!(
            "1M".parse::<ByteSize>().unwrap(),
            ByteSize::bytes(1_000_000)
        );
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize::bytes(4096));
        assert_eq!(" 10B ".parse::<ByteSize>().unwrap(), ByteSize::bytes(10));
    }

    #[test]
    fn size_errors_name_the_problem() {
        assert!(matches!(
            "".parse::<ByteSize>(),
            Err(UnitError::Empty { .. })
        ));
        assert!(matches!(
            "Mi".parse::<ByteSize>(),
            Err(UnitError::Malformed { .. })
        ));
        let err = "64MB".parse::<ByteSize>().unwrap_err();
        assert!(matches!(&err, UnitError::UnknownUnit { unit, .. } if unit == "MB"));
        assert!(err.to_string().contains("Mi"), "{err}");
        assert!(matches!(
            "99999999999Ti".parse::<ByteSize>(),
            Err(UnitError::Overflow { .. })
        ));
        assert!(matches!(
            "-5Mi".parse::<ByteSize>(),
            Err(UnitError::Malformed { .. })
        ));
    }

    #[test]
    fn durations_parse_sums_of_units() {
        let d = |s: &str| s.parse::<HumanDuration>().unwrap().get();
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1s500ms"), Duration::from_millis(1500));
    }

    #[test]
    fn duration_errors_name_the_problem() {
        assert!(matches!(
            "5".parse::<HumanDuration>(),
            Err(UnitError::Malformed { .. })
        ));
        assert!(matches!(
            "5sec".parse::<HumanDuration>(),
            Err(UnitError::UnknownUnit { unit, .. }) if unit == "sec"
        ));
        assert!(matches!(
            "s".parse::<HumanDuration>(),
            Err(UnitError::Malformed { .. })
        ));
    }

    #[test]
    fn serde_rejects_bare_numbers_with_a_hint() {
        #[derive(Debug, Deserialize)]
        struct L {
            #[allow(dead_code, reason = "only deserialized")]
            memory: ByteSize,
        }
        let err = toml::from_str::<L>("memory = 64").unwrap_err().to_string();
        assert!(err.contains("has no unit"), "{err}");
        let ok: L = toml::from_str("memory = \"64Mi\"").unwrap();
        assert_eq!(ok.memory, ByteSize::mib(64));
    }

    proptest! {
        #[test]
        fn size_display_round_trips(n in 0u64..(1u64 << 50)) {
            let s = ByteSize::bytes(n);
            prop_assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }

        #[test]
        fn duration_display_round_trips(ms in 0u64..(1u64 << 40)) {
            let d = HumanDuration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }
    }
}
