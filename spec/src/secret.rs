//! Secrets: values an app needs (a gateway's API key, a webhook signing key) that no
//! person or tool should read back once they are set.
//!
//! A secret lives in a namespace and holds a few keys. The controllers keep it sealed
//! with AES-256-GCM (`spec/controller.md`, "Secrets"); the API takes values and never
//! answers with one: `get`, `describe` and `-o json` show its keys, and the apps that
//! use it. A value reaches a guest only through `wasi:config`, and only when the app (or
//! cron job) lists it under `[secrets]`, as Spin's secret variables and wasmCloud's
//! secrets do:
//!
//! ```toml
//! [secrets]                       # config key = "secret/key", in the app's namespace
//! gateway_key = "payment-keys/gateway"
//! ```
//!
//! The listing is part of the app's revision; the values are not, so a new value
//! reaches the running pods without a rollout (each host reloads the pods that use it).
//!
//! Values travel in [`Revealed`], whose `Debug` shows keys only, so a value cannot end
//! up in a log line by accident.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resources::{Millis, valid_name};
use crate::validate::Invalid;

/// The largest value of one key.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The largest secret: all its keys and values.
pub const MAX_SECRET_BYTES: usize = 256 * 1024;
/// The most keys one secret holds.
pub const MAX_KEYS: usize = 64;

/// Whether `key` may name a key of a secret: 1 to 253 letters, digits, `_`, `-`, `.`
/// (Kubernetes' rule for the keys of a Secret's data).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// One `[secrets]` entry: the key `key` of the secret `secret`, in the namespace of the
/// app that lists it. Written `secret/key`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub secret: String,
    pub key: String,
}

impl FromStr for SecretRef {
    type Err = String;

    fn from_str(s: &str) -> Result<SecretRef, String> {
        let (secret, key) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` names no key: write it as `secret/key`"))?;
        if !valid_name(secret) {
            return Err(format!(
                "`{secret}` is not a valid secret name (lowercase letters, digits and `-`)"
            ));
        }
        if !valid_key(key) {
            return Err(format!(
                "`{key}` is not a valid key of a secret (letters, digits, `_`, `-`, `.`)"
            ));
        }
        Ok(SecretRef {
            secret: secret.to_string(),
            key: key.to_string(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.secret, self.key)
    }
}

impl Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretRef, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Values on their way to a guest (config key → value), or to the cluster in a
/// [`SecretPut`]. `Debug` names the keys only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revealed(pub BTreeMap<String, String>);

impl Revealed {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// `PUT /v1/secrets/{ns}/{name}`: the keys to set. The other keys of an existing
/// secret are kept, unless `replace` is set (then the secret is exactly `data`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretPut {
    pub data: Revealed,
    #[serde(default)]
    pub replace: bool,
    /// Keys to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl SecretPut {
    /// Checks the keys and the sizes (what the cluster already holds is the
    /// controller's to add).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.data.is_empty() && self.remove.is_empty() {
            return Err(Invalid::new(
                "data",
                "sets no key: give at least one KEY=VALUE",
            ));
        }
        if self.data.0.len() > MAX_KEYS {
            return Err(Invalid::new(
                "data",
                format!(
                    "{} keys: a secret holds at most {MAX_KEYS}",
                    self.data.0.len()
                ),
            ));
        }
        for (k, v) in self.data.0.iter() {
            if !valid_key(k) {
                return Err(Invalid::new(
                    format!("data.{k}"),
                    format!(
                        "`{k}` is not a valid key (letters, digits, `_`, `-`, `.`; at most 253)"
                    ),
                ));
            }
            if v.len() > MAX_VALUE_BYTES {
                return Err(Invalid::new(
                    format!("data.{k}"),
                    format!("the value is {} bytes: at most {MAX_VALUE_BYTES}", v.len()),
                ));
            }
        }
        if let Some(k) = self.remove.iter().find(|k| self.data.0.contains_key(*k)) {
            return Err(Invalid::new(
                "remove",
                format!("`{k}` is both set and removed"),
            ));
        }
        Ok(())
    }
}

/// A secret as the API shows it: everything but its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretView {
    pub namespace: String,
    pub name: String,
    pub keys: Vec<String>,
    /// Bumped by every change of its values.
    pub version: u64,
    pub created: Millis,
    pub updated: Millis,
    /// The data key its values are sealed with.
    pub data_key: u32,
    /// The apps and cron jobs that list it (`app/NAME`, `cronjob/NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// `POST /v1/secrets/rotate-key`: what the rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    /// The data key new values are sealed with from now on.
    pub data_key: u32,
    /// The secrets re-sealed with it.
    pub resealed: usize,
    /// The data keys dropped (nothing is sealed with them any more).
    pub retired: Vec<u32>,
}

/// Checks a `[secrets]` table: each config key is a valid name and not also under
/// `[config]`. `section` is where it was written (`secrets`, `cron[0].secrets`).
pub fn check_listing(
    section: &str,
    listing: &BTreeMap<String, SecretRef>,
    config: &BTreeMap<String, String>,
) -> Result<(), Invalid> {
    for key in listing.keys() {
        if key.is_empty() {
            return Err(Invalid::new(section, "a config key cannot be empty"));
        }
        if config.contains_key(key) {
            return Err(Invalid::new(
                format!("{section}.{key}"),
                format!("`{key}` is also under [config]: a config key comes from one place"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_secret_slash_key() {
        let r: SecretRef = "payment-keys/gateway_key".parse().unwrap();
        assert_eq!(r.secret, "payment-keys");
        assert_eq!(r.key, "gateway_key");
        assert_eq!(r.to_string(), "payment-keys/gateway_key");
        assert!(
            "payment-keys"
                .parse::<SecretRef>()
                .unwrap_err()
                .contains("secret/key")
        );
        assert!(
            "Payment/k"
                .parse::<SecretRef>()
                .unwrap_err()
                .contains("secret name")
        );
        assert!(
            "p/a b"
                .parse::<SecretRef>()
                .unwrap_err()
                .contains("valid key")
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"payment-keys/gateway_key\"");
        assert_eq!(serde_json::from_str::<SecretRef>(&json).unwrap(), r);
    }

    #[test]
    fn debug_never_shows_a_value() {
        let v = Revealed([("api_key".to_string(), "sk_live_123".to_string())].into());
        let shown = format!(
            "{v:?} {:?}",
            SecretPut {
                data: v.clone(),
                ..Default::default()
            }
        );
        assert!(shown.contains("api_key"), "{shown}");
        assert!(!shown.contains("sk_live_123"), "{shown}");
        // The wire still carries it.
        assert!(serde_json::to_string(&v).unwrap().contains("sk_live_123"));
    }

    #[test]
    fn puts_are_checked() {
        let put = |k: &str, v: String| SecretPut {
            data: Revealed([(k.to_string(), v)].into()),
            ..Default::default()
        };
        assert!(put("gateway_key", "x".into()).validate().is_ok());
        assert_eq!(
            put("a b", "x".into()).validate().unwrap_err().field,
            "data.a b"
        );
        let big = put("k", "x".repeat(MAX_VALUE_BYTES + 1))
            .validate()
            .unwrap_err();
        assert!(big.message.contains("at most 65536"), "{big:?}");
        assert!(SecretPut::default().validate().is_err());
        let both = SecretPut {
            remove: vec!["gateway_key".into()],
            ..put("gateway_key", "x".into())
        };
        assert!(both.validate().unwrap_err().message.contains("both"));
    }

    #[test]
    fn a_config_key_comes_from_one_place() {
        let listing: BTreeMap<String, SecretRef> =
            [("gateway_key".to_string(), "keys/gw".parse().unwrap())].into();
        assert!(check_listing("secrets", &listing, &BTreeMap::new()).is_ok());
        let config = [("gateway_key".to_string(), "plain".to_string())].into();
        let e = check_listing("secrets", &listing, &config).unwrap_err();
        assert_eq!(e.field, "secrets.gateway_key");
    }
}
