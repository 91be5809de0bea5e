//! The resources the control plane holds and the API serves: apps and their immutable
//! revisions, replica sets, pods, hosts, and access grants.
//!
//! Times are milliseconds since the Unix epoch, stamped by the leader when it proposes a
//! change, so that applying the Raft log is deterministic on every replica.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::analysis::AnalysisTemplate;
use crate::rollout::Rollout;
use crate::scale::Scale;
use crate::{Capabilities, Digest, LimitOverrides};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// What an operator asks for: an app's desired state, with its component resolved to a
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    pub namespace: String,
    /// The component, by content.
    pub component: Digest,
    pub route: Route,
    /// Pods to run.
    pub replicas: u32,
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Labels a host must have to run this app's pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// How the autoscaler sizes the app; without it `replicas` stays as set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// How a new revision takes over (`spec/rollouts.md`); without it, rolling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The analysis templates its rollout names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<AnalysisTemplate>,
    /// The regions it runs in, and how it fails over (`spec/regions.md`); without it,
    /// anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<crate::regions::RegionPlacement>,
    /// How many requests a second reach it (`crate::ratelimit`); without it, all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
}

impl AppSpec {
    /// Whether two specs are the same revision: everything but the replica count, the
    /// scaling rules, the rollout, the regions and the rate limit (which change how many
    /// pods run and where, how a revision takes over, or what the ingress lets through,
    /// not what runs).
    pub fn same_revision(&self, other: &AppSpec) -> bool {
        let what_runs = |s: &AppSpec| AppSpec {
            replicas: 0,
            scale: None,
            rollout: None,
            analysis: Vec::new(),
            regions: None,
            rate_limit: None,
            ..s.clone()
        };
        what_runs(self) == what_runs(other)
    }

    /// The app's rollout strategy (rolling when it has no `[rollout]`).
    pub fn strategy(&self) -> crate::rollout::Strategy {
        self.rollout
            .as_ref()
            .map(|r| r.strategy)
            .unwrap_or_default()
    }

    /// A blue-green app's preview route: its `preview_route` prefix on the app's host.
    pub fn preview_route(&self) -> Option<Route> {
        let prefix = self.rollout.as_ref()?.preview_route.clone()?;
        Some(Route {
            prefix,
            host: self.route.host.clone(),
        })
    }

    /// Every route the app takes requests on: its own, and its preview route.
    pub fn routes(&self) -> Vec<Route> {
        std::iter::once(self.route.clone())
            .chain(self.preview_route())
            .collect()
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.name)
    }
}

/// `namespace/name`: how an object that lives in a namespace (an app, a pod, a cron job,
/// a job run) is named everywhere — in the state's maps, the API's paths, the hosts'
/// routing tables and in logs.
///
/// Names are checked by [`valid_name`] and never contain `/`, so the key splits back
/// into its two parts unambiguously. It orders, hashes and serializes exactly as the
/// string `namespace/name` (it is one), so maps keyed by it read and write the same
/// JSON as maps keyed by that string, and `map.get("ns/name")` works.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceKey(String);

impl ResourceKey {
    pub fn new(namespace: &str, name: &str) -> ResourceKey {
        ResourceKey(format!("{namespace}/{name}"))
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, n)| n)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::borrow::Borrow<str> for ResourceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A string that is not `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key: expected NAMESPACE/NAME")]
pub struct ResourceKeyError(String);

impl TryFrom<String> for ResourceKey {
    type Error = ResourceKeyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ResourceKey(s))
            }
            _ => Err(ResourceKeyError(s)),
        }
    }
}

impl std::str::FromStr for ResourceKey {
    type Err = ResourceKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResourceKey::try_from(s.to_string())
    }
}

impl From<ResourceKey> for String {
    fn from(k: ResourceKey) -> String {
        k.0
    }
}

/// Where an app receives requests: a path prefix (matched on whole segments) and,
/// optionally, a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Route {
    /// Whether this route serves `path` on `host`. `/payments` serves `/payments` and
    /// `/payments/x`, not `/paymentsx`; `/` serves everything.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(h) = &self.host {
            let req = host.map(|h| h.split(':').next().unwrap_or(h));
            if !req.is_some_and(|r| r.eq_ignore_ascii_case(h)) {
                return false;
            }
        }
        let prefix = self.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return true;
        }
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Two routes conflict when they would serve exactly the same requests.
    pub fn conflicts_with(&self, other: &Route) -> bool {
        self.prefix.trim_end_matches('/') == other.prefix.trim_end_matches('/')
            && self.host.as_deref().map(str::to_ascii_lowercase)
                == other.host.as_deref().map(str::to_ascii_lowercase)
    }

    /// How specific the route is: longer prefixes and named hosts win.
    pub fn specificity(&self) -> (bool, usize) {
        (self.host.is_some(), self.prefix.trim_end_matches('/').len())
    }
}

/// An app as the control plane holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub spec: AppSpec,
    /// The revision now serving.
    pub revision: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// An immutable snapshot of an app's spec; every change except scaling makes a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub number: u64,
    pub spec: AppSpec,
    pub created_at: Millis,
}

/// How many pods of one revision should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    pub namespace: String,
    pub app: String,
    pub revision: u64,
    pub replicas: u32,
}

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodPhase {
    /// Not placed on a host yet (see `reason`).
    Pending,
    /// Placed; the host has not reported it running.
    Scheduled,
    /// The host runs it.
    Running,
    /// The host could not run it (see `reason`).
    Failed,
}

/// One replica of one revision, assigned to (at most) one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// `app-r<revision>-<n>`, unique within the namespace.
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub revision: u64,
    pub host: Option<String>,
    pub phase: PodPhase,
    /// Why it is Pending or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: Millis,
    /// The region it must run in (an app placed across regions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// When it entered its phase (the leader's clock; 0 in states written before this
    /// was kept, read as `created_at`).
    #[serde(default)]
    pub phase_since: Millis,
    /// How many failed pods of its replica set this one replaces, one after another
    /// (a replacement counts its predecessor's restarts and one more): `RESTARTS`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Its predecessors' failures in a row, none of them after a run of
    /// [`RestartBackoff::RESET_AFTER`]: the exponent of its back-off if it fails too.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backoff: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// When a Failed pod is replaced: Kubernetes' crash-loop back-off. A pod that fails is
/// replaced `first` after it failed; each failure in a row doubles the wait, up to
/// `max`. A pod that ran for [`RestartBackoff::RESET_AFTER`] before it failed starts
/// the count again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    pub first: Millis,
    pub max: Millis,
}

impl Default for RestartBackoff {
    /// 10 s, doubling to 5 min (Kubernetes' values).
    fn default() -> Self {
        RestartBackoff {
            first: 10_000,
            max: 300_000,
        }
    }
}

impl RestartBackoff {
    /// A run this long before failing makes the failure a first one again (10 min).
    pub const RESET_AFTER: Millis = 600_000;

    /// The wait after a failure with `backoff` failures in a row before it.
    pub fn delay(&self, backoff: u32) -> Millis {
        self.first
            .saturating_mul(1u64 << backoff.min(32))
            .min(self.max)
    }

    /// When the Failed `pod` is replaced.
    pub fn restart_at(&self, pod: &Pod) -> Millis {
        pod.phase_since
            .max(pod.created_at)
            .saturating_add(self.delay(pod.backoff))
    }
}

impl Pod {
    /// Whether it is waiting out a crash loop's back-off: Failed, and not the first of
    /// its replica set's pods to fail in a row (`CrashLoopBackOff` in `get pods`).
    pub fn crash_looping(&self) -> bool {
        self.phase == PodPhase::Failed && self.backoff > 0
    }

    /// Why it is Pending or Failed, as `get pods` shows it: a crash loop says so first.
    pub fn why(&self) -> Option<String> {
        match (self.crash_looping(), &self.reason) {
            (true, Some(r)) => Some(format!("CrashLoopBackOff: {r}")),
            (true, None) => Some("CrashLoopBackOff".into()),
            (false, r) => r.clone(),
        }
    }

    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.name)
    }

    /// The key of the app this pod is a replica of.
    pub fn app_key(&self) -> ResourceKey {
        ResourceKey::new(&self.namespace, &self.app)
    }
}

/// What a host offers, as it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// Unique host name.
    pub name: String,
    /// The host's ingress, e.g. `http://10.0.0.5:8080`.
    pub address: String,
    pub region: String,
    pub zone: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
}

/// Resources a host offers or a pod reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    /// Bytes of guest memory.
    pub memory: u64,
    /// Instance slots.
    pub instances: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum HostState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub info: HostInfo,
    pub state: HostState,
    /// When `state` last changed.
    pub since: Millis,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read anything in its scope.
    Viewer,
    /// Read, and create, change and delete apps in its scope.
    Deployer,
    /// Everything, including tokens and cluster membership.
    Admin,
    /// A host: register, heartbeat, read its assignments and blobs, use buckets.
    Host,
    /// Nothing by itself: what its role bindings give (`crate::rbac`).
    Bound,
}

/// A token's role, for one namespace or (`None`) all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A name for people (`ci-deployer`), never the secret.
    pub label: String,
    /// For a host's own credential: the one host it speaks for. A `Host` grant without
    /// one is the cluster's join token, which may only register new hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When the token stops working (ms since the epoch; none: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Millis>,
}

/// Checks a name generated from resource names (a pod's, a run's), safe as one segment
/// of a URL path or a file path: 1–253 lower-case letters, digits, `-` and `.`,
/// starting with a letter or digit (so never `..`, never a slash).
pub fn valid_segment(s: &str) -> bool {
    (1..=253).contains(&s.len())
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
}

/// Checks a DNS-label-like name: 1–63 lower-case letters, digits and `-`, starting with a
/// letter, not ending with `-`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, host: Option<&str>) -> Route {
        Route {
            prefix: prefix.into(),
            host: host.map(Into::into),
        }
    }

    #[test]
    fn the_restart_back_off_doubles_from_ten_seconds_to_five_minutes() {
        let b = RestartBackoff::default();
        let waits: Vec<Millis> = (0..8).map(|n| b.delay(n)).collect();
        assert_eq!(
            waits,
            [
                10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000
            ]
        );
        // No overflow however long the loop.
        assert_eq!(b.delay(u32::MAX), 300_000);
        let quick = RestartBackoff {
            first: 100,
            max: 1_000,
        };
        assert_eq!(quick.delay(3), 800);
        assert_eq!(quick.delay(4), 1_000);
    }

    #[test]
    fn a_failed_pod_is_replaced_its_back_off_after_it_failed() {
        let mut pod = Pod {
            name: "a-r1-1".into(),
            namespace: "default".into(),
            app: "a".into(),
            revision: 1,
            host: Some("h1".into()),
            phase: PodPhase::Failed,
            reason: Some("trap".into()),
            created_at: 1_000,
            region: None,
            phase_since: 5_000,
            restarts: 2,
            backoff: 2,
        };
        let b = RestartBackoff::default();
        assert_eq!(b.restart_at(&pod), 5_000 + 40_000);
        assert!(pod.crash_looping());
        // A state written before `phase_since` was kept: counted from creation.
        pod.phase_since = 0;
        assert_eq!(b.restart_at(&pod), 1_000 + 40_000);
        assert_eq!(pod.why().as_deref(), Some("CrashLoopBackOff: trap"));
        pod.backoff = 0;
        assert!(!pod.crash_looping(), "a first failure is not a loop");
        assert_eq!(pod.why().as_deref(), Some("trap"));
        pod.phase = PodPhase::Running;
        pod.backoff = 3;
        assert!(!pod.crash_looping(), "a running pod is not waiting");
    }

    #[test]
    fn routes_match_whole_segments() {
        let r = route("/payments", None);
        assert!(r.matches(None, "/payments"));
        assert!(r.matches(None, "/payments/pay_1"));
        assert!(!r.matches(None, "/paymentsx"));
        assert!(!r.matches(None, "/"));
        assert!(route("/", None).matches(None, "/anything"));
        let h = route("/", Some("shop.example.com"));
        assert!(h.matches(Some("SHOP.example.com:8080"), "/x"));
        assert!(!h.matches(Some("other.com"), "/x"));
        assert!(!h.matches(None, "/x"));
    }

    #[test]
    fn conflicts_are_identical_prefix_and_host() {
        assert!(route("/a", None).conflicts_with(&route("/a/", None)));
        assert!(!route("/a", None).conflicts_with(&route("/a/b", None)));
        assert!(!route("/a", Some("x.com")).conflicts_with(&route("/a", None)));
        assert!(route("/a", Some("X.com")).conflicts_with(&route("/a", Some("x.com"))));
    }

    #[test]
    fn keys_split_back_and_serialize_as_their_string() {
        let k = ResourceKey::new("shop", "payment");
        assert_eq!(
            (k.namespace(), k.name(), k.as_str()),
            ("shop", "payment", "shop/payment")
        );
        assert_eq!(serde_json::to_string(&k).unwrap(), r#""shop/payment""#);
        let back: ResourceKey = serde_json::from_str(r#""shop/payment""#).unwrap();
        assert_eq!(back, k);
        let mut map = BTreeMap::new();
        map.insert(k.clone(), 1);
        assert_eq!(
            serde_json::to_string(&map).unwrap(),
            r#"{"shop/payment":1}"#
        );
        assert_eq!(map.get("shop/payment"), Some(&1));
        for bad in ["payment", "/payment", "shop/", "a/b/c", ""] {
            assert!(bad.parse::<ResourceKey>().is_err(), "{bad}");
            assert!(serde_json::from_str::<ResourceKey>(&format!("{bad:?}")).is_err());
        }
        // Ordered as the strings are, so state maps iterate as they always did.
        let (a, b) = (ResourceKey::new("a-b", "x"), ResourceKey::new("a", "x"));
        assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()));
    }

    #[test]
    fn names_are_dns_labels() {
        for ok in ["payment", "a", "search-v2", "x1"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Payment", "1app", "app-", "a_b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
