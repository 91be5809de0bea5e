//! Secrets in the replicated state: sealed values and wrapped data keys only
//! (`crate::vault`), and the rules that keep every listed secret present — an app or
//! cron job may list only keys that exist, and a key in use cannot be removed.

use std::collections::{BTreeMap, BTreeSet};

use dabba_spec::resources::{Millis, ResourceKey};
use dabba_spec::secret::{SecretRef, SecretView};
use serde::{Deserialize, Serialize};

use super::{State, rejected};
use crate::command::{Rejection, Reply};
use crate::vault::{Sealed, WrappedKey};

/// One secret, as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// Sealed values by key, each with [`crate::vault::value_aad`].
    pub data: BTreeMap<String, Sealed>,
    /// The data key they are sealed with.
    pub data_key: u32,
    pub version: u64,
    pub created: Millis,
    pub updated: Millis,
}

/// The secrets and the data keys that seal them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    pub secrets: BTreeMap<ResourceKey, StoredSecret>,
    /// Wrapped data keys by id; the newest seals new values.
    pub data_keys: BTreeMap<u32, WrappedKey>,
}

impl Secrets {
    /// The data key new values are sealed with.
    pub fn current_key(&self) -> Option<u32> {
        self.data_keys.keys().next_back().copied()
    }
}

/// A secret re-sealed by a rotation, if it is still at `expect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resealed {
    pub secret: ResourceKey,
    pub expect: u64,
    pub data: BTreeMap<String, Sealed>,
}

impl State {
    /// Sets a secret's values (all of them: the leader merged and sealed them), if the
    /// secret is still at version `expect` (0: absent).
    pub(super) fn put_secret(
        &mut self,
        key: &ResourceKey,
        data: &BTreeMap<String, Sealed>,
        data_key: u32,
        expect: u64,
        at: Millis,
    ) -> Reply {
        let current = self.secrets.secrets.get(key);
        let version = current.map_or(0, |s| s.version);
        if version != expect {
            return rejected(
                Rejection::Conflict,
                format!("secret {key} changed meanwhile (version {version}, not {expect})"),
            );
        }
        if !self.secrets.data_keys.contains_key(&data_key) {
            // Rotated away since the leader sealed it: sealed again, it goes through.
            return rejected(
                Rejection::Conflict,
                format!("data key {data_key} was rotated away meanwhile"),
            );
        }
        if let Some(current) = current {
            let removed: Vec<&String> = current
                .data
                .keys()
                .filter(|k| !data.contains_key(*k))
                .collect();
            for k in removed {
                let users = self.secret_users(key, Some(k));
                if !users.is_empty() {
                    return rejected(
                        Rejection::Conflict,
                        format!(
                            "key `{k}` of secret {key} is listed by {}: remove it from their \
                             [secrets] first",
                            users.join(", ")
                        ),
                    );
                }
            }
        }
        let created = current.map_or(at, |s| s.created);
        self.secrets.secrets.insert(
            key.clone(),
            StoredSecret {
                data: data.clone(),
                data_key,
                version: version + 1,
                created,
                updated: at,
            },
        );
        let what = if version == 0 { "Created" } else { "Updated" };
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        self.event(
            at,
            format!("secret/{key}"),
            what,
            format!("keys: {}", keys.join(", ")),
        );
        self.version += 1;
        Reply::Ok
    }

    pub(super) fn delete_secret(&mut self, key: &ResourceKey, at: Millis) -> Reply {
        if !self.secrets.secrets.contains_key(key) {
            return rejected(Rejection::NotFound, format!("no secret {key}"));
        }
        let users = self.secret_users(key, None);
        if !users.is_empty() {
            return rejected(
                Rejection::Conflict,
                format!(
                    "secret {key} is listed by {}: remove it from their [secrets] first",
                    users.join(", ")
                ),
            );
        }
        self.secrets.secrets.remove(key);
        self.event(at, format!("secret/{key}"), "Deleted", "deleted");
        self.version += 1;
        Reply::Ok
    }

    /// A new data key; the secrets in `resealed` move to it, and the data keys nothing
    /// is sealed with any more are dropped. Refused whole if any secret changed since
    /// the leader re-sealed it, or if a secret was left out.
    pub(super) fn rotate_data_key(
        &mut self,
        id: u32,
        wrapped: &WrappedKey,
        resealed: &[Resealed],
        at: Millis,
    ) -> Reply {
        if self.secrets.current_key().is_some_and(|k| k >= id) {
            return rejected(
                Rejection::Conflict,
                format!("data key {id} is not newer than the current one"),
            );
        }
        for r in resealed {
            let version = self.secrets.secrets.get(&r.secret).map(|s| s.version);
            if version != Some(r.expect) {
                return rejected(
                    Rejection::Conflict,
                    format!("secret {} changed during the rotation", r.secret),
                );
            }
        }
        let covered: BTreeSet<&ResourceKey> = resealed.iter().map(|r| &r.secret).collect();
        if let Some(left) = self.secrets.secrets.keys().find(|k| !covered.contains(k)) {
            return rejected(
                Rejection::Conflict,
                format!("secret {left} was created during the rotation"),
            );
        }
        self.secrets.data_keys.insert(id, wrapped.clone());
        for r in resealed {
            if let Some(s) = self.secrets.secrets.get_mut(&r.secret) {
                s.data = r.data.clone();
                s.data_key = id;
                s.version += 1;
                s.updated = at;
            }
        }
        self.secrets.data_keys.retain(|k, _| *k == id);
        self.event(
            at,
            "secrets".to_string(),
            "KeyRotated",
            format!("data key {id}: {} secret(s) re-sealed", resealed.len()),
        );
        self.version += 1;
        Reply::Ok
    }

    /// The apps and cron jobs that list `secret` (its key `key`, if given): an app's
    /// current spec or a revision that still has pods, a cron job's spec.
    pub fn secret_users(&self, secret: &ResourceKey, key: Option<&str>) -> Vec<String> {
        let lists = |ns: &str, listing: &BTreeMap<String, SecretRef>| {
            ns == secret.namespace()
                && listing
                    .values()
                    .any(|r| r.secret == secret.name() && key.is_none_or(|k| r.key == k))
        };
        let mut users = BTreeSet::new();
        for app in self.apps.values() {
            if lists(&app.spec.namespace, &app.spec.capabilities.secrets) {
                users.insert(format!("app/{}", app.spec.name));
            }
        }
        for pod in self.pods.values() {
            if let Some(rev) = self.revision(&pod.namespace, &pod.app, pod.revision)
                && lists(&pod.namespace, &rev.spec.capabilities.secrets)
            {
                users.insert(format!("app/{}", pod.app));
            }
        }
        for job in self.cron.jobs.values() {
            if lists(&job.spec.namespace, &job.spec.secrets) {
                users.insert(format!("cronjob/{}", job.spec.name));
            }
        }
        users.into_iter().collect()
    }

    /// The first of `listing`'s entries whose secret or key does not exist in `ns`, as
    /// a refusal.
    pub(super) fn missing_secret(
        &self,
        ns: &str,
        listing: &BTreeMap<String, SecretRef>,
    ) -> Option<Reply> {
        listing.iter().find_map(|(config_key, r)| {
            let key = ResourceKey::new(ns, &r.secret);
            let message = match self.secrets.secrets.get(&key) {
                None => format!(
                    "secrets.{config_key}: namespace {ns} has no secret `{}` (create it with \
                     `dabba secret set {key} {}=...`)",
                    r.secret, r.key
                ),
                Some(s) if !s.data.contains_key(&r.key) => format!(
                    "secrets.{config_key}: secret {key} has no key `{}` (it has: {})",
                    r.key,
                    s.data.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(_) => return None,
            };
            Some(rejected(Rejection::Invalid, message))
        })
    }

    /// Every secret in `namespace` (`None`: all), as the API shows them.
    pub fn secret_views(&self, namespace: Option<&str>) -> Vec<SecretView> {
        self.secrets
            .secrets
            .iter()
            .filter(|(k, _)| namespace.is_none_or(|ns| k.namespace() == ns))
            .map(|(k, s)| SecretView {
                namespace: k.namespace().to_string(),
                name: k.name().to_string(),
                keys: s.data.keys().cloned().collect(),
                version: s.version,
                created: s.created,
                updated: s.updated,
                data_key: s.data_key,
                used_by: self.secret_users(k, None),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{spec, with_blobs};
    use crate::vault::Vault;

    fn code(r: &Reply) -> Option<Rejection> {
        match r {
            Reply::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn message(r: &Reply) -> String {
        match r {
            Reply::Rejected { message, .. } => message.clone(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn key() -> ResourceKey {
        ResourceKey::new("default", "payment-keys")
    }

    /// `keys` sealed with data key `id` of `vault` (the state never opens them; the
    /// vault makes them real ciphertext anyway).
    fn sealed(vault: &Vault, id: u32, keys: &[&str]) -> BTreeMap<String, Sealed> {
        let (dk, _) = vault.new_data_key(id);
        keys.iter()
            .map(|k| (k.to_string(), dk.seal(k, b"value")))
            .collect()
    }

    fn put(keys: &[&str], data_key: u32, expect: u64) -> crate::command::Command {
        let vault = Vault::from_hex(&"11".repeat(32)).unwrap();
        crate::command::Command::PutSecret {
            key: key(),
            data: sealed(&vault, data_key, keys),
            data_key,
            expect,
            at: 5,
        }
    }

    fn rotate(state: &State, id: u32) -> crate::command::Command {
        let vault = Vault::from_hex(&"11".repeat(32)).unwrap();
        let (_, wrapped) = vault.new_data_key(id);
        crate::command::Command::RotateDataKey {
            id,
            wrapped,
            resealed: state
                .secrets
                .secrets
                .iter()
                .map(|(k, s)| Resealed {
                    secret: k.clone(),
                    expect: s.version,
                    data: s.data.clone(),
                })
                .collect(),
            at: 6,
        }
    }

    fn listing(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretRef> {
        pairs
            .iter()
            .map(|(c, r)| (c.to_string(), r.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_secret_changes_only_from_the_version_it_was_read_at() {
        let mut s = State::default();
        assert_eq!(
            code(&s.apply(&put(&["gateway"], 1, 0))),
            Some(Rejection::Conflict)
        );
        assert_eq!(s.apply(&rotate(&s.clone(), 1)), Reply::Ok);
        assert_eq!(s.apply(&put(&["gateway"], 1, 0)), Reply::Ok);
        let stored = &s.secrets.secrets[&key()];
        assert_eq!((stored.version, stored.data_key), (1, 1));
        // A second writer that read "absent" loses, and changes nothing.
        let before = s.clone();
        assert_eq!(
            code(&s.apply(&put(&["other"], 1, 0))),
            Some(Rejection::Conflict)
        );
        assert_eq!(s, before);
        assert_eq!(s.apply(&put(&["gateway", "webhook"], 1, 1)), Reply::Ok);
        assert_eq!(s.secrets.secrets[&key()].version, 2);
        assert_eq!(
            s.secret_views(Some("default"))[0].keys,
            ["gateway", "webhook"]
        );
        assert!(s.secret_views(Some("shop")).is_empty());
    }

    #[test]
    fn an_app_lists_only_keys_that_exist_and_a_listed_key_stays() {
        let mut s = with_blobs();
        s.apply(&rotate(&s.clone(), 1));
        let mut app = spec("payment", "/payments", 1);
        app.capabilities.secrets = listing(&[("gateway_key", "payment-keys/gateway")]);
        let apply = crate::command::Command::ApplyApp {
            spec: Box::new(app.clone()),
            at: 1,
        };
        let refused = s.apply(&apply);
        assert!(
            message(&refused).contains("has no secret `payment-keys`"),
            "{refused:?}"
        );
        s.apply(&put(&["webhook"], 1, 0));
        let refused = s.apply(&apply);
        assert!(
            message(&refused).contains("has no key `gateway`"),
            "{refused:?}"
        );
        s.apply(&put(&["gateway", "webhook"], 1, 1));
        assert!(matches!(s.apply(&apply), Reply::App { .. }));
        assert_eq!(s.secret_users(&key(), None), ["app/payment"]);
        assert_eq!(
            s.secret_users(&key(), Some("webhook")),
            Vec::<String>::new()
        );

        // Removing the listed key, or the secret, is refused; the other key may go.
        let refused = s.apply(&put(&["webhook"], 1, 2));
        assert!(message(&refused).contains("key `gateway`"), "{refused:?}");
        assert!(message(&refused).contains("app/payment"), "{refused:?}");
        let del = crate::command::Command::DeleteSecret { key: key(), at: 2 };
        assert_eq!(code(&s.apply(&del)), Some(Rejection::Conflict));
        assert_eq!(s.apply(&put(&["gateway"], 1, 2)), Reply::Ok);

        // Once nothing lists it (the app and its pods gone), it can be deleted.
        s.apply(&crate::command::Command::DeleteApp {
            namespace: "default".into(),
            name: "payment".into(),
            at: 3,
        });
        assert!(s.secret_users(&key(), None).is_empty());
        assert_eq!(s.apply(&del), Reply::Ok);
        assert_eq!(code(&s.apply(&del)), Some(Rejection::NotFound));
    }

    #[test]
    fn a_rotation_reseals_everything_or_nothing() {
        let mut s = State::default();
        s.apply(&rotate(&s.clone(), 1));
        s.apply(&put(&["gateway"], 1, 0));
        let stale = rotate(&s.clone(), 2);
        s.apply(&put(&["gateway", "webhook"], 1, 1));
        let before = s.clone();
        assert_eq!(code(&s.apply(&stale)), Some(Rejection::Conflict));
        assert_eq!(s, before, "a refused rotation changes nothing");
        // One that leaves a secret out is refused too.
        let mut partial = rotate(&s.clone(), 2);
        if let crate::command::Command::RotateDataKey { resealed, .. } = &mut partial {
            resealed.clear();
        }
        assert_eq!(code(&s.apply(&partial)), Some(Rejection::Conflict));
        assert_eq!(s.apply(&rotate(&s.clone(), 2)), Reply::Ok);
        assert_eq!(s.secrets.data_keys.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(s.secrets.secrets[&key()].data_key, 2);
        // Not newer than the current one: refused.
        assert_eq!(
            code(&s.apply(&rotate(&s.clone(), 2))),
            Some(Rejection::Conflict)
        );
    }

    #[test]
    fn a_cron_job_lists_only_secrets_that_exist() {
        let mut s = with_blobs();
        s.apply(&rotate(&s.clone(), 1));
        let manifest = r#"
[[cron]]
name = "settle"
schedule = "0 2 * * *"
component = "settle.wasm"
secrets = { bank_key = "payment-keys/bank" }
"#;
        let job = dabba_spec::cronjob::CronManifest::parse("cron.toml", manifest)
            .unwrap()
            .cron
            .remove(0);
        let apply = crate::command::Command::ApplyCronJob {
            spec: Box::new(job),
            component: crate::state::tests::digest(1),
            at: 1,
        };
        assert!(message(&s.apply(&apply)).contains("no secret `payment-keys`"));
        s.apply(&put(&["bank"], 1, 0));
        assert_eq!(s.apply(&apply), Reply::Ok);
        assert_eq!(s.secret_users(&key(), Some("bank")), ["cronjob/settle"]);
    }
}
