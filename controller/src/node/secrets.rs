//! Sealing and opening secrets at this controller's edge (`crate::vault`): the state
//! machine only ever sees ciphertext.

use std::collections::BTreeMap;

use dabba_spec::api::HostView;
use dabba_spec::resources::{Millis, ResourceKey};
use dabba_spec::secret::{KeyRotated, Revealed, SecretPut, SecretRef};

use super::{Controller, ProposeError};
use crate::command::{Command, Rejection, Reply};
use crate::state::State;
use crate::state::secrets::{Resealed, StoredSecret};
use crate::vault::{DataKey, Sealed, VaultError, value_aad};

/// Attempts at a change that raced another change of the same secret.
const ATTEMPTS: usize = 5;

/// Why a secret could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("{message}")]
    Rejected { code: Rejection, message: String },
}

impl Controller {
    /// The values `listing` names in namespace `ns`, by config key.
    pub fn reveal(
        &self,
        s: &State,
        ns: &str,
        listing: &BTreeMap<String, SecretRef>,
    ) -> Result<Revealed, String> {
        let mut out = BTreeMap::new();
        for (config_key, r) in listing {
            let secret = ResourceKey::new(ns, &r.secret);
            let stored = s
                .secrets
                .secrets
                .get(&secret)
                .ok_or_else(|| format!("secret {secret} does not exist"))?;
            if !stored.data.contains_key(&r.key) {
                return Err(format!("secret {secret} has no key `{}`", r.key));
            }
            let value = self
                .open_one(s, &secret, stored, &r.key)
                .map_err(|e| e.to_string())?;
            let value = String::from_utf8(value)
                .map_err(|_| format!("key `{}` of secret {secret} is not UTF-8", r.key))?;
            out.insert(config_key.clone(), value);
        }
        Ok(Revealed(out))
    }

    /// Gives each pod and run of a host's view the values its spec lists.
    pub fn reveal_view(&self, s: &State, view: &mut HostView) {
        for a in &mut view.pods {
            match self.reveal(s, &a.spec.namespace, &a.spec.capabilities.secrets) {
                Ok(v) => a.secrets = v,
                Err(e) => a.unrevealed = Some(e),
            }
        }
        for r in &mut view.runs {
            match self.reveal(s, &r.spec.namespace, &r.spec.secrets) {
                Ok(v) => r.secrets = v,
                Err(e) => r.unrevealed = Some(e),
            }
        }
    }

    /// Every value of a stored secret, opened.
    fn open_all(
        &self,
        s: &State,
        key: &ResourceKey,
        stored: &StoredSecret,
    ) -> Result<BTreeMap<String, Vec<u8>>, VaultError> {
        stored
            .data
            .keys()
            .map(|k| Ok((k.clone(), self.open_one(s, key, stored, k)?)))
            .collect()
    }

    /// The value of key `k` of a stored secret (which has it), opened.
    fn open_one(
        &self,
        s: &State,
        key: &ResourceKey,
        stored: &StoredSecret,
        k: &str,
    ) -> Result<Vec<u8>, VaultError> {
        let tampered = || VaultError::Tampered {
            what: format!("key `{k}` of secret {key}"),
        };
        let sealed = stored.data.get(k).ok_or_else(tampered)?;
        self.data_key(s, stored.data_key)?
            .open(&value_aad(key.as_str(), k, stored.data_key), sealed)
            .ok_or_else(tampered)
    }

    fn data_key(&self, s: &State, id: u32) -> Result<DataKey, VaultError> {
        let wrapped = s
            .secrets
            .data_keys
            .get(&id)
            .ok_or_else(|| VaultError::Tampered {
                what: format!("data key {id} (it is not in the state)"),
            })?;
        self.vault.unwrap_key(id, wrapped)
    }

    /// Sets (or, with `replace`, replaces) a secret's keys. The values of the keys kept
    /// are re-sealed with the current data key, so a secret is sealed with one key.
    pub async fn put_secret(
        &self,
        key: &ResourceKey,
        put: &SecretPut,
        at: Millis,
    ) -> Result<(), SecretError> {
        for _ in 0..ATTEMPTS {
            let current_key = self.shared.read(|s| s.secrets.current_key());
            if current_key.is_none() {
                // The cluster's first secret: its first data key.
                self.rotate_data_key(at).await?;
            }
            let command = self.shared.read(|s| -> Result<Command, SecretError> {
                let id = s
                    .secrets
                    .current_key()
                    .ok_or_else(|| SecretError::Rejected {
                        code: Rejection::Conflict,
                        message: "no data key yet".into(),
                    })?;
                let stored = s.secrets.secrets.get(key);
                let mut values: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                if let Some(stored) = stored.filter(|_| !put.replace) {
                    values = self.open_all(s, key, stored)?;
                }
                for k in &put.remove {
                    if values.remove(k).is_none() {
                        return Err(SecretError::Rejected {
                            code: Rejection::NotFound,
                            message: format!("secret {key} has no key `{k}` to remove"),
                        });
                    }
                }
                for (k, v) in &put.data.0 {
                    values.insert(k.clone(), v.clone().into_bytes());
                }
                check_size(key, &values)?;
                let data_key = self.data_key(s, id)?;
                let data = values
                    .iter()
                    .map(|(k, v)| (k.clone(), data_key.seal(&value_aad(key.as_str(), k, id), v)))
                    .collect();
                Ok(Command::PutSecret {
                    key: key.clone(),
                    data,
                    data_key: id,
                    expect: stored.map_or(0, |s| s.version),
                    at,
                })
            })?;
            let Command::PutSecret {
                expect, data_key, ..
            } = &command
            else {
                unreachable!("built above")
            };
            let (expect, sealed_with) = (*expect, *data_key);
            match self.propose(command).await? {
                Reply::Ok => return Ok(()),
                Reply::Rejected { code, message } => {
                    let moved = self.shared.read(|s| {
                        s.secrets.secrets.get(key).map_or(0, |s| s.version) != expect
                            || s.secrets.current_key() != Some(sealed_with)
                    });
                    if !(code == Rejection::Conflict && moved) {
                        return Err(SecretError::Rejected { code, message });
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Err(SecretError::Rejected {
            code: Rejection::Conflict,
            message: format!("secret {key} kept changing: try again"),
        })
    }

    /// A new data key; every secret re-sealed with it, the old ones dropped.
    pub async fn rotate_data_key(&self, at: Millis) -> Result<KeyRotated, SecretError> {
        for _ in 0..ATTEMPTS {
            let (command, rotated) =
                self.shared
                    .read(|s| -> Result<(Command, KeyRotated), SecretError> {
                        let id = s.secrets.current_key().map_or(1, |k| k + 1);
                        let (new, wrapped) = self.vault.new_data_key(id);
                        let mut resealed = Vec::new();
                        for (key, stored) in &s.secrets.secrets {
                            let data: BTreeMap<String, Sealed> = self
                                .open_all(s, key, stored)?
                                .iter()
                                .map(|(k, v)| {
                                    (k.clone(), new.seal(&value_aad(key.as_str(), k, id), v))
                                })
                                .collect();
                            resealed.push(Resealed {
                                secret: key.clone(),
                                expect: stored.version,
                                data,
                            });
                        }
                        let rotated = KeyRotated {
                            data_key: id,
                            resealed: resealed.len(),
                            retired: s.secrets.data_keys.keys().copied().collect(),
                        };
                        Ok((
                            Command::RotateDataKey {
                                id,
                                wrapped,
                                resealed,
                                at,
                            },
                            rotated,
                        ))
                    })?;
            match self.propose(command).await? {
                Reply::Ok => return Ok(rotated),
                Reply::Rejected {
                    code: Rejection::Conflict,
                    ..
                } => continue,
                Reply::Rejected { code, message } => {
                    return Err(SecretError::Rejected { code, message });
                }
                other => return Err(unexpected(other)),
            }
        }
        Err(SecretError::Rejected {
            code: Rejection::Conflict,
            message: "the secrets kept changing during the rotation: try again".into(),
        })
    }
}

/// A reply a secret command never gets.
fn unexpected(reply: Reply) -> SecretError {
    SecretError::Rejected {
        code: Rejection::Invalid,
        message: format!("unexpected reply {reply:?}"),
    }
}

fn check_size(key: &ResourceKey, values: &BTreeMap<String, Vec<u8>>) -> Result<(), SecretError> {
    use dabba_spec::secret::{MAX_KEYS, MAX_SECRET_BYTES};
    let size: usize = values.iter().map(|(k, v)| k.len() + v.len()).sum();
    let refuse = |message: String| {
        Err(SecretError::Rejected {
            code: Rejection::Invalid,
            message,
        })
    };
    if values.is_empty() {
        return refuse(format!(
            "secret {key} would hold no key: delete it instead (`dabba delete secret {key}`)"
        ));
    }
    if values.len() > MAX_KEYS {
        return refuse(format!(
            "secret {key} would hold {} keys: at most {MAX_KEYS}",
            values.len()
        ));
    }
    if size > MAX_SECRET_BYTES {
        return refuse(format!(
            "secret {key} would hold {size} bytes: at most {MAX_SECRET_BYTES}"
        ));
    }
    Ok(())
}
