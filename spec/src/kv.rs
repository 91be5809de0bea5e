//! The semantics of key-value writes, shared by every backend: the host's local stores
//! and the controller's replicated state machine apply a [`Write`] with the same
//! [`apply`] function, so a bucket behaves the same wherever it lives.
//!
//! See `spec/keyvalue.md` for the contract.

use serde::{Deserialize, Serialize};

/// Keys returned by one `list-keys` call.
pub const LIST_PAGE: usize = 1000;
/// The largest key a guest may write.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value a guest may write.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum KvError {
    #[error("`{key}` does not hold a counter")]
    NotACounter { key: String },
    #[error("counter `{key}` would overflow")]
    Overflow { key: String },
    #[error("key of {len} bytes is longer than the {max}-byte limit")]
    KeyTooLong { len: usize, max: usize },
    #[error("value of {len} bytes under `{key}` is larger than the {max}-byte limit")]
    ValueTooLarge { key: String, len: usize, max: usize },
    #[error("storage failed: {message}")]
    Storage { message: String },
    /// A cron job attempt's write after the attempt stopped being the run's current
    /// one ([`crate::cronjob::Fence`]).
    #[error("write refused: {message}")]
    Fenced { message: String },
}

impl KvError {
    pub fn storage(e: impl std::fmt::Display) -> KvError {
        KvError::Storage {
            message: e.to_string(),
        }
    }
}

/// Keys with a value to set (`Some`) or nothing, to delete (`None`).
pub type Pairs = Vec<(String, Option<Vec<u8>>)>;

/// One atomic write to one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Write {
    /// Set (`Some`) or delete (`None`) each key, all or none.
    Put(#[serde(with = "b64::pairs")] Pairs),
    /// Add `delta` to the decimal counter under `key` (missing counts as 0).
    Increment { key: String, delta: i64 },
    /// Store `value` if `key` currently holds exactly `expected` (`None`: absent).
    Swap {
        key: String,
        #[serde(with = "b64::opt")]
        expected: Option<Vec<u8>>,
        #[serde(with = "b64::bytes")]
        value: Vec<u8>,
    },
}

/// What a [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Counter(i64),
    /// The swap happened.
    Swapped,
    /// The swap did not happen: the key held this instead.
    Conflict(#[serde(with = "b64::opt")] Option<Vec<u8>>),
}

/// Storage a write can be applied to: one bucket's keys.
pub trait Bucket {
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn store(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), KvError>;
}

/// A bucket held in memory (the controllers' state machine, `MemoryKv`).
impl Bucket for std::collections::BTreeMap<String, Vec<u8>> {
    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.get(key).cloned())
    }
    fn store(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
        match value {
            Some(v) => self.insert(key.to_string(), v.to_vec()),
            None => self.remove(key),
        };
        Ok(())
    }
}

/// Applies `write` to `bucket`. Everything that can fail is checked before anything is
/// changed, so a failed write leaves the bucket as it was.
pub fn apply(bucket: &mut impl Bucket, write: &Write) -> Result<Outcome, KvError> {
    check_write(write)?;
    match write {
        Write::Put(pairs) => {
            for (k, v) in pairs {
                bucket.store(k, v.as_deref())?;
            }
            Ok(Outcome::Done)
        }
        Write::Increment { key, delta } => {
            let current = bucket.read(key)?;
            let next = counter(key, current.as_deref())?
                .checked_add(*delta)
                .ok_or_else(|| KvError::Overflow { key: key.clone() })?;
            bucket.store(key, Some(next.to_string().as_bytes()))?;
            Ok(Outcome::Counter(next))
        }
        Write::Swap {
            key,
            expected,
            value,
        } => {
            let current = bucket.read(key)?;
            if current == *expected {
                bucket.store(key, Some(value))?;
                Ok(Outcome::Swapped)
            } else {
                Ok(Outcome::Conflict(current))
            }
        }
    }
}

/// Checks the sizes in a write before it reaches storage.
pub fn check_write(write: &Write) -> Result<(), KvError> {
    let key_ok = |k: &str| {
        if k.len() > MAX_KEY_BYTES {
            Err(KvError::KeyTooLong {
                len: k.len(),
                max: MAX_KEY_BYTES,
            })
        } else {
            Ok(())
        }
    };
    let value_ok = |k: &str, v: &[u8]| {
        if v.len() > MAX_VALUE_BYTES {
            Err(KvError::ValueTooLarge {
                key: k.to_string(),
                len: v.len(),
                max: MAX_VALUE_BYTES,
            })
        } else {
            Ok(())
        }
    };
    match write {
        Write::Put(pairs) => {
            for (k, v) in pairs {
                key_ok(k)?;
                if let Some(v) = v {
                    value_ok(k, v)?;
                }
            }
            Ok(())
        }
        Write::Increment { key, .. } => key_ok(key),
        Write::Swap { key, value, .. } => {
            key_ok(key)?;
            value_ok(key, value)
        }
    }
}

/// Cuts a listing of up to `limit + 1` keys into a page of `limit` and the cursor of the
/// next page (the page's last key), or `None` when nothing follows.
pub fn page(mut keys: Vec<String>, limit: usize) -> (Vec<String>, Option<String>) {
    if keys.len() > limit {
        keys.truncate(limit);
        let next = keys.last().cloned();
        (keys, next)
    } else {
        (keys, None)
    }
}

/// Parses a stored counter; a missing key counts as 0.
fn counter(key: &str, stored: Option<&[u8]>) -> Result<i64, KvError> {
    match stored {
        None => Ok(0),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| KvError::NotACounter {
                key: key.to_string(),
            }),
    }
}

/// Byte strings as base64 in JSON, so values travel compactly through the API and the
/// Raft log.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(b: &[u8]) -> String {
        STANDARD.encode(b)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        STANDARD.decode(s).map_err(|e| format!("bad base64: {e}"))
    }

    pub mod bytes {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)
        }
    }

    pub mod opt {
        use super::*;
        pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&encode(b)),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| decode(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    pub mod pairs {
        use super::*;
        use serde::ser::SerializeSeq;

        #[allow(
            clippy::ptr_arg,
            reason = "serde's `with` passes the field by reference"
        )]
        pub fn serialize<S: Serializer>(
            v: &Vec<(String, Option<Vec<u8>>)>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for (k, val) in v {
                seq.serialize_element(&(k, val.as_deref().map(encode)))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<super::super::Pairs, D::Error> {
            Vec::<(String, Option<String>)>::deserialize(d)?
                .into_iter()
                .map(|(k, v)| {
                    let v = v
                        .map(|t| decode(&t))
                        .transpose()
                        .map_err(serde::de::Error::custom)?;
                    Ok((k, v))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn counters_swaps_and_puts() {
        let mut m = BTreeMap::<String, Vec<u8>>::new();
        let inc = |d| Write::Increment {
            key: "n".into(),
            delta: d,
        };
        assert_eq!(apply(&mut m, &inc(5)).unwrap(), Outcome::Counter(5));
        assert_eq!(apply(&mut m, &inc(-7)).unwrap(), Outcome::Counter(-2));
        assert_eq!(m["n"], b"-2");
        let swap = |exp: Option<&[u8]>, v: &[u8]| Write::Swap {
            key: "c".into(),
            expected: exp.map(<[u8]>::to_vec),
            value: v.to_vec(),
        };
        assert_eq!(apply(&mut m, &swap(None, b"x")).unwrap(), Outcome::Swapped);
        assert_eq!(
            apply(&mut m, &swap(None, b"y")).unwrap(),
            Outcome::Conflict(Some(b"x".to_vec()))
        );
        m.insert("word".into(), b"one".to_vec());
        assert!(matches!(
            apply(
                &mut m,
                &Write::Increment {
                    key: "word".into(),
                    delta: 1
                }
            ),
            Err(KvError::NotACounter { .. })
        ));
        m.insert("big".into(), i64::MAX.to_string().into_bytes());
        assert!(matches!(
            apply(
                &mut m,
                &Write::Increment {
                    key: "big".into(),
                    delta: 1
                }
            ),
            Err(KvError::Overflow { .. })
        ));
        assert_eq!(
            m["big"],
            i64::MAX.to_string().into_bytes(),
            "a failed write changes nothing"
        );
    }

    #[test]
    fn writes_round_trip_through_json_with_base64_values() {
        let writes = vec![
            Write::Put(vec![
                ("a".into(), Some(vec![0, 1, 255])),
                ("b".into(), None),
            ]),
            Write::Increment {
                key: "n".into(),
                delta: -3,
            },
            Write::Swap {
                key: "k".into(),
                expected: None,
                value: b"v".to_vec(),
            },
            Write::Swap {
                key: "k".into(),
                expected: Some(vec![]),
                value: vec![],
            },
        ];
        for w in writes {
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(serde_json::from_str::<Write>(&json).unwrap(), w, "{json}");
        }
        let json =
            serde_json::to_string(&Write::Put(vec![("a".into(), Some(b"hi".to_vec()))])).unwrap();
        assert!(json.contains("aGk="), "{json}");
        for o in [
            Outcome::Done,
            Outcome::Counter(3),
            Outcome::Swapped,
            Outcome::Conflict(None),
            Outcome::Conflict(Some(vec![9])),
        ] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
        }
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            check_write(&Write::Increment {
                key: long_key,
                delta: 1
            }),
            Err(KvError::KeyTooLong { .. })
        ));
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            check_write(&Write::Put(vec![("k".into(), Some(big))])),
            Err(KvError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn paging_cuts_at_the_limit() {
        let keys: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(page(keys.clone(), 10), (keys.clone(), None));
        assert_eq!(
            page(keys.clone(), 4),
            (keys[..4].to_vec(), Some("3".into()))
        );
    }
}
