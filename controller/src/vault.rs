//! Secrets at rest: envelope encryption with AES-256-GCM.
//!
//! Every controller holds the cluster's key-encryption key in `secrets.key` in its data
//! directory (readable by its owner alone; the first controller creates it, a joining
//! one gets it with the peer token). The replicated state holds only ciphertext: the
//! secrets' values, sealed with a *data key*, and the data keys themselves, wrapped with
//! the key-encryption key. So the Raft log, its snapshots and a copy of them hold no
//! value that can be read without `secrets.key`.
//!
//! The leader seals (nonces are random, so sealing cannot happen while applying the
//! log, which must be deterministic); any controller opens, when it hands a host the
//! values its pods list. Rotation (`dabba secret rotate-key`) wraps a new data key,
//! re-seals every secret with it and drops the old one.
//!
//! The associated data binds each ciphertext to where it belongs (namespace, secret,
//! key, data key), so a ciphertext copied to another secret's key does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;

use crate::credentials::{read_secret, write_secret};

/// A ciphertext and its nonce, as the state holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// 12 bytes, hex.
    pub nonce: String,
    /// The ciphertext with its 16-byte tag, hex.
    pub ciphertext: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len() / 2)
    }
}

/// A data key wrapped with the key-encryption key `kek` (its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub kek: String,
    pub sealed: Sealed,
}

/// Why something could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error(
        "data key {data_key} was wrapped with key-encryption key {wanted}, but this controller's \
         secrets.key is {have}: copy secrets.key from a controller that has it"
    )]
    WrongKek {
        data_key: u32,
        wanted: String,
        have: String,
    },
    #[error("{what} does not open: it was changed, or sealed with another key")]
    Tampered { what: String },
    #[error("secrets.key: {0}")]
    KeyFile(String),
}

/// One AES-256 key in memory (`Debug` does not show it).
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The key-encryption key of the cluster.
pub struct Vault {
    kek: [u8; 32],
    id: String,
}

impl Vault {
    /// Reads `path`, or creates it with `given` (a joining controller's copy of the
    /// cluster's key) or a new random key.
    pub fn open(path: &Path, given: Option<&str>) -> Result<Vault, VaultError> {
        let text = match read_secret(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let t = given
                    .map(str::to_string)
                    .unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>()));
                write_secret(path, &t).map_err(|e| VaultError::KeyFile(e.to_string()))?;
                t
            }
            Err(e) => return Err(VaultError::KeyFile(e.to_string())),
        };
        Vault::from_hex(&text)
    }

    /// A vault holding the key written as 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Vault, VaultError> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| VaultError::KeyFile("not 64 hex digits (a 256-bit key)".into()))?;
        let id = hex::encode(&Sha256::digest([b"dabba kek\0".as_slice(), &bytes].concat())[..8]);
        Ok(Vault { kek: bytes, id })
    }

    /// The key as written in `secrets.key` (for a joining controller).
    pub fn export(&self) -> String {
        hex::encode(self.kek)
    }

    /// Names the key without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A new data key, and its wrapping for the state.
    pub fn new_data_key(&self, id: u32) -> (DataKey, WrappedKey) {
        let key = DataKey(rand::random());
        let sealed = seal_with(&self.kek, &wrap_aad(id), &key.0);
        (
            key,
            WrappedKey {
                kek: self.id.clone(),
                sealed,
            },
        )
    }

    /// The data key `id` from its wrapping.
    pub fn unwrap_key(&self, id: u32, wrapped: &WrappedKey) -> Result<DataKey, VaultError> {
        if wrapped.kek != self.id {
            return Err(VaultError::WrongKek {
                data_key: id,
                wanted: wrapped.kek.clone(),
                have: self.id.clone(),
            });
        }
        let bytes = open_with(&self.kek, &wrap_aad(id), &wrapped.sealed).ok_or_else(|| {
            VaultError::Tampered {
                what: format!("data key {id}"),
            }
        })?;
        <[u8; 32]>::try_from(bytes)
            .map(DataKey)
            .map_err(|_| VaultError::Tampered {
                what: format!("data key {id}"),
            })
    }
}

/// Where a value belongs: it opens only there.
pub fn value_aad(secret: &str, key: &str, data_key: u32) -> String {
    format!("dabba secret\0{secret}\0{key}\0{data_key}")
}

fn wrap_aad(id: u32) -> String {
    format!("dabba data key\0{id}")
}

impl DataKey {
    pub fn seal(&self, aad: &str, value: &[u8]) -> Sealed {
        seal_with(&self.0, aad, value)
    }

    /// The value, if `sealed` opens with this key where `aad` says it belongs.
    pub fn open(&self, aad: &str, sealed: &Sealed) -> Option<Vec<u8>> {
        open_with(&self.0, aad, sealed)
    }
}

fn seal_with(key: &[u8; 32], aad: &str, value: &[u8]) -> Sealed {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce: [u8; 12] = rand::random();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value,
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM encrypts any input under 64 GiB");
    Sealed {
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    }
}

fn open_with(key: &[u8; 32], aad: &str, sealed: &Sealed) -> Option<Vec<u8>> {
    let nonce = hex::decode(&sealed.nonce).ok()?;
    let ciphertext = hex::decode(&sealed.ciphertext).ok()?;
    if nonce.len() != 12 {
        return None;
    }
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_where_it_was_sealed() {
        let vault = Vault::from_hex(&"11".repeat(32)).unwrap();
        let (key, wrapped) = vault.new_data_key(3);
        let aad = value_aad("payments/keys", "gateway", 3);
        let sealed = key.seal(&aad, b"sk_live_42");
        assert!(!sealed.ciphertext.contains(&hex::encode(b"sk_live_42")));
        // Through the wrapping, as another controller would.
        let again = vault.unwrap_key(3, &wrapped).unwrap();
        assert_eq!(again.open(&aad, &sealed).unwrap(), b"sk_live_42");
        // Moved to another key, secret or data key: refused.
        assert!(
            again
                .open(&value_aad("payments/keys", "other", 3), &sealed)
                .is_none()
        );
        assert!(
            again
                .open(&value_aad("shop/keys", "gateway", 3), &sealed)
                .is_none()
        );
        assert!(vault.unwrap_key(4, &wrapped).is_err(), "a wrapping renamed");
        // One bit changed: refused.
        let mut bad = sealed.clone();
        let flipped = if bad.ciphertext.starts_with('0') {
            "1"
        } else {
            "0"
        };
        bad.ciphertext.replace_range(0..1, flipped);
        assert!(again.open(&aad, &bad).is_none());
    }

    #[test]
    fn another_clusters_key_is_named_not_used() {
        let ours = Vault::from_hex(&"11".repeat(32)).unwrap();
        let theirs = Vault::from_hex(&"22".repeat(32)).unwrap();
        let (_, wrapped) = theirs.new_data_key(1);
        let e = ours.unwrap_key(1, &wrapped).unwrap_err();
        assert!(matches!(e, VaultError::WrongKek { .. }), "{e}");
        assert!(e.to_string().contains(theirs.id()), "{e}");
        assert!(Vault::from_hex("abc").is_err());
    }

    #[test]
    fn the_key_file_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let first = Vault::open(&path, None).unwrap();
        let second = Vault::open(&path, Some(&"33".repeat(32))).unwrap();
        assert_eq!(first.id(), second.id(), "an existing key file wins");
        let joined = Vault::open(&dir.path().join("b.key"), Some(&first.export())).unwrap();
        assert_eq!(joined.id(), first.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
