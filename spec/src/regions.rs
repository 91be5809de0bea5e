//! Regions: which regions an app runs in, which one serves it first, and when it fails
//! over (`[placement]` in the manifest, `spec/regions.md`); and the cluster's view of a
//! region's health. Types, checks and the pure rules over them; the failover decisions
//! are the controller's (`reconcile/regions.rs`).
//!
//! ```toml
//! [placement]
//! regions = ["mumbai", "singapore", "hyderabad"]   # in order of preference
//! primary = "mumbai"                                # default: the first
//! failover = "automatic"                            # or "manual"
//! region_availability_below = "50%"                 # of the region's hosts Ready
//! success_rate_below = "80%"                        # of the app's requests there ...
//! for = "30s"                                       # ... over this long
//! degraded = "refuse"                               # or "serve-stateless"
//! [placement.region.singapore]
//! min = 0                                           # a standby at zero pods
//! max = 20
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::HumanDuration;
use crate::resources::valid_name;
use crate::validate::{Invalid, name_message};

/// How an app runs across regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPlacement {
    /// The regions, in order of preference (the first healthy one after the primary
    /// takes over when the primary fails).
    pub regions: Vec<String>,
    /// The region that serves while it is healthy. By default the first of `regions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default)]
    pub failover: FailoverMode,
    /// The primary fails over when fewer of its hosts than this are Ready. By default
    /// 50%.
    #[serde(
        default = "fifty",
        with = "crate::units::percent",
        skip_serializing_if = "is_fifty"
    )]
    pub region_availability_below: u32,
    /// ... or when the app's success rate there stays below this for `for`. By default
    /// 80%.
    #[serde(
        default = "eighty",
        with = "crate::units::percent",
        skip_serializing_if = "is_eighty"
    )]
    pub success_rate_below: u32,
    /// How long the success rate must stay below its threshold. By default 30 s.
    #[serde(rename = "for", default = "thirty_seconds")]
    pub window: HumanDuration,
    /// What a host does for this app while its region is cut off from the controllers'
    /// majority.
    #[serde(default)]
    pub degraded: Degraded,
    /// Bounds on the pods in each region.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub region: BTreeMap<String, RegionBounds>,
}

fn fifty() -> u32 {
    50
}
fn is_fifty(p: &u32) -> bool {
    *p == 50
}
fn eighty() -> u32 {
    80
}
fn is_eighty(p: &u32) -> bool {
    *p == 80
}
fn thirty_seconds() -> HumanDuration {
    HumanDuration::from_secs(30)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverMode {
    /// A trigger fails the app over on its own.
    #[default]
    Automatic,
    /// Only `dabba region failover` (or `drain`) moves it; triggers are reported.
    Manual,
}

/// What an app does in a region cut off from the controllers' majority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Degraded {
    /// Answer 503 at once, naming the cause, so clients (and a GSLB) go elsewhere.
    #[default]
    Refuse,
    /// Keep serving from the pods there: for functions that keep no state.
    ServeStateless,
}

/// The pods an app may have in one region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionBounds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

impl RegionPlacement {
    /// The primary region.
    pub fn primary(&self) -> &str {
        self.primary
            .as_deref()
            .or(self.regions.first().map(String::as_str))
            .unwrap_or_default()
    }

    /// The regions in the order they take over: the primary, then the rest as listed.
    pub fn in_order(&self) -> Vec<&str> {
        let primary = self.primary();
        std::iter::once(primary)
            .chain(
                self.regions
                    .iter()
                    .map(String::as_str)
                    .filter(|r| *r != primary),
            )
            .collect()
    }

    /// The bounds of `region`: as written, else 0 and the app's max. A region that
    /// serves the app (or is about to: a drain's target, a restored region) holds at
    /// least the app's own min — a standby's `min = 0` is for while it stands by.
    pub fn bounds(&self, region: &str, app_min: u32, app_max: u32, serves: bool) -> (u32, u32) {
        let written = self.region.get(region).copied().unwrap_or_default();
        let floor = if serves { app_min } else { 0 };
        let min = written.min.unwrap_or(floor).max(floor);
        (min, written.max.unwrap_or(app_max).max(min))
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.regions.is_empty() {
            return Err(Invalid::new(
                "placement.regions",
                "name at least one region",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            if !valid_name(r) {
                return Err(Invalid::new(
                    format!("placement.regions[{i}]"),
                    name_message("region", r),
                ));
            }
            if !seen.insert(r) {
                return Err(Invalid::new(
                    format!("placement.regions[{i}]"),
                    format!("`{r}` is listed twice"),
                ));
            }
        }
        if let Some(p) = &self.primary
            && !self.regions.contains(p)
        {
            return Err(Invalid::new(
                "placement.primary",
                format!(
                    "`{p}` is not one of the regions ({})",
                    self.regions.join(", ")
                ),
            ));
        }
        for (field, p) in [
            ("region_availability_below", self.region_availability_below),
            ("success_rate_below", self.success_rate_below),
        ] {
            if p == 0 {
                return Err(Invalid::new(
                    format!("placement.{field}"),
                    "0% would never fire: give 1% to 100%",
                ));
            }
        }
        if self.window.get().as_millis() < 1000 {
            return Err(Invalid::new("placement.for", "must be at least 1s"));
        }
        for (name, b) in &self.region {
            if !self.regions.contains(name) {
                return Err(Invalid::new(
                    format!("placement.region.{name}"),
                    format!(
                        "`{name}` is not one of the regions ({})",
                        self.regions.join(", ")
                    ),
                ));
            }
            if let (Some(min), Some(max)) = (b.min, b.max)
                && min > max
            {
                return Err(Invalid::new(
                    format!("placement.region.{name}.min"),
                    format!("min {min} is above max {max}"),
                ));
            }
        }
        Ok(())
    }
}

/// An app's placement as the cluster holds it (in the replicated state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementStatus {
    /// Pods wanted in each region now.
    pub replicas: BTreeMap<String, u32>,
    /// Regions the app no longer serves from, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, RegionFailure>,
    /// Regions being drained, each to its target: requests move once the target runs
    /// its pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub draining: BTreeMap<String, String>,
    /// Regions restored, each from the region that stood in for it: that one keeps its
    /// pods until the restored region runs its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restoring: BTreeMap<String, String>,
}

/// Why and when an app stopped serving from a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionFailure {
    pub since: crate::resources::Millis,
    pub kind: FailoverKind,
    pub reason: String,
    /// The region that took over.
    pub to: String,
    /// The pods the region wanted before (what a restore gives it back).
    pub replicas_before: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverKind {
    /// A trigger fired.
    Automatic,
    /// `dabba region failover`.
    Manual,
    /// `dabba region drain`: planned, after the target ran its pods.
    Drained,
}

impl PlacementStatus {
    /// The region serving the app as its primary now: the first, in the order regions
    /// take over, that has not failed.
    pub fn serving<'p>(&self, placement: &'p RegionPlacement) -> Option<&'p str> {
        placement
            .in_order()
            .into_iter()
            .find(|r| !self.failed.contains_key(*r))
    }

    /// Whether requests may go to the app's pods in `region`.
    pub fn routes_to(&self, region: &str) -> bool {
        !self.failed.contains_key(region)
    }

    /// Whether `region` serves the app, or is about to (the target of a drain, a
    /// region being restored): it holds at least the app's min.
    pub fn serves(&self, placement: &RegionPlacement, region: &str) -> bool {
        self.serving(placement) == Some(region)
            || self.draining.values().any(|to| to == region)
            || self.restoring.contains_key(region)
    }

    /// A new app's (or a changed placement's) pods per region: the serving region its
    /// count, every other its `min`; regions no longer listed are dropped.
    pub fn sized(
        &self,
        placement: &RegionPlacement,
        serving_count: u32,
        app_min: u32,
        app_max: u32,
    ) -> PlacementStatus {
        let mut out = self.clone();
        out.failed.retain(|r, _| placement.regions.contains(r));
        out.draining.retain(|r, _| placement.regions.contains(r));
        out.restoring.retain(|r, _| placement.regions.contains(r));
        let serving = out.serving(placement).map(str::to_string);
        out.replicas = placement
            .regions
            .iter()
            .map(|r| {
                let (min, max) = placement.bounds(r, app_min, app_max, out.serves(placement, r));
                let n = if out.failed.contains_key(r) {
                    0
                } else if Some(r) == serving.as_ref() {
                    serving_count.clamp(min, max)
                } else {
                    self.replicas.get(r).copied().unwrap_or(0).clamp(min, max)
                };
                (r.clone(), n)
            })
            .collect();
        out
    }
}

/// How one region stands, from the committed state: its hosts, and whether an operator
/// failed it over or drained it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionHealth {
    pub region: String,
    pub hosts: u32,
    pub ready: u32,
    /// Ready hosts ÷ hosts, in percent (0 with no hosts).
    pub availability: u32,
    /// The controllers (voters) in the region.
    #[serde(default)]
    pub voters: u32,
}

impl RegionHealth {
    /// Whether the region's availability is below `percent`.
    pub fn below(&self, percent: u32) -> bool {
        self.availability < percent
    }
}

/// Whether a cluster whose voters are spread as `voters_by_region` keeps a majority when
/// any one region is lost: every region's voters must be fewer than the voters outside
/// it can outvote. Returns, for each region, whether losing it keeps a quorum.
pub fn survives_region_loss(voters_by_region: &BTreeMap<String, u32>) -> BTreeMap<String, bool> {
    let total: u32 = voters_by_region.values().sum();
    let majority = total / 2 + 1;
    voters_by_region
        .iter()
        .map(|(r, n)| (r.clone(), total - n >= majority))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(text: &str) -> RegionPlacement {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_payment_regions_sample_manifest_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/payment/regions.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let m = crate::Manifest::parse(path, &text).unwrap_or_else(|e| panic!("{e}"));
        let p = m
            .to_spec(crate::Digest::of(b"x"))
            .regions
            .expect("placed across regions");
        assert_eq!(p.primary(), "mumbai");
        assert_eq!(p.bounds("singapore", 2, 20, false), (0, 20));
        assert_eq!(p.bounds("hyderabad", 2, 20, false), (1, 20));
        // Serving (failed over to, or draining to), a standby holds the app's min.
        assert_eq!(p.bounds("singapore", 2, 20, true), (2, 20));
        assert_eq!(p.bounds("hyderabad", 2, 20, true), (2, 20));
        assert_eq!(p.degraded, Degraded::Refuse);
        // `apply --wait` waits for the pods of every region: 2 in Mumbai, Hyderabad's 1.
        let mut detail = crate::api::AppDetail {
            app: crate::resources::App {
                spec: m.to_spec(crate::Digest::of(b"x")),
                revision: 1,
                created_at: 0,
                updated_at: 0,
            },
            revisions: vec![],
            replica_sets: vec![],
            pods: vec![],
            events: vec![],
            autoscaler: None,
            rollout: None,
            placement: None,
        };
        assert_eq!(detail.pods_wanted(), 2, "not placed: the app's replicas");
        detail.placement = Some(PlacementStatus {
            replicas: [
                ("mumbai".into(), 2),
                ("singapore".into(), 0),
                ("hyderabad".into(), 1),
            ]
            .into(),
            ..PlacementStatus::default()
        });
        assert_eq!(detail.pods_wanted(), 3);
    }

    #[test]
    fn a_placement_reads_with_its_defaults() {
        let p = placement(
            "regions = [\"mumbai\", \"singapore\", \"hyderabad\"]\n[region.singapore]\nmin = 0\nmax = 20\n",
        );
        assert_eq!(p.primary(), "mumbai");
        assert_eq!(p.in_order(), ["mumbai", "singapore", "hyderabad"]);
        assert_eq!(p.failover, FailoverMode::Automatic);
        assert_eq!(
            (p.region_availability_below, p.success_rate_below),
            (50, 80)
        );
        assert_eq!(p.window.get().as_secs(), 30);
        assert_eq!(p.bounds("mumbai", 2, 10, true), (2, 10));
        assert_eq!(p.bounds("singapore", 2, 10, false), (0, 20));
        assert_eq!(p.bounds("hyderabad", 2, 10, false), (0, 10));
        assert_eq!(p.validate(), Ok(()));
        let with_primary = placement("regions = [\"a\", \"b\", \"c\"]\nprimary = \"b\"\n");
        assert_eq!(with_primary.in_order(), ["b", "a", "c"]);
    }

    #[test]
    fn mistakes_name_their_field() {
        let field = |t: &str| placement(t).validate().unwrap_err().field;
        assert_eq!(field("regions = []"), "placement.regions");
        assert_eq!(field("regions = [\"a\", \"a\"]"), "placement.regions[1]");
        assert_eq!(field("regions = [\"A b\"]"), "placement.regions[0]");
        assert_eq!(
            field("regions = [\"a\"]\nprimary = \"b\""),
            "placement.primary"
        );
        assert_eq!(
            field("regions = [\"a\"]\nsuccess_rate_below = \"0%\""),
            "placement.success_rate_below"
        );
        assert_eq!(field("regions = [\"a\"]\nfor = \"100ms\""), "placement.for");
        assert_eq!(
            field("regions = [\"a\"]\n[region.b]\nmin = 1"),
            "placement.region.b"
        );
        assert_eq!(
            field("regions = [\"a\"]\n[region.a]\nmin = 3\nmax = 1"),
            "placement.region.a.min"
        );
        assert!(
            toml::from_str::<RegionPlacement>("regions = [\"a\"]\nfailover = \"soon\"").is_err()
        );
        assert!(
            toml::from_str::<RegionPlacement>("regions = [\"a\"]\nsuccess_rate_below = \"120%\"")
                .is_err()
        );
    }

    #[test]
    fn a_placement_sizes_its_serving_region_and_keeps_standbys_at_their_min() {
        let p = placement("regions = [\"mumbai\", \"singapore\"]\n[region.singapore]\nmin = 1\n");
        let s = PlacementStatus::default().sized(&p, 4, 0, 10);
        assert_eq!(s.replicas["mumbai"], 4);
        assert_eq!(s.replicas["singapore"], 1);
        assert_eq!(s.serving(&p), Some("mumbai"));
        let mut failed = s.clone();
        failed.failed.insert(
            "mumbai".into(),
            RegionFailure {
                since: 1,
                kind: FailoverKind::Manual,
                reason: "drill".into(),
                to: "singapore".into(),
                replicas_before: 4,
            },
        );
        assert_eq!(failed.serving(&p), Some("singapore"));
        assert!(!failed.routes_to("mumbai"));
        let again = failed.sized(&p, 6, 0, 10);
        assert_eq!(
            (again.replicas["mumbai"], again.replicas["singapore"]),
            (0, 6)
        );
    }

    #[test]
    fn three_regions_survive_losing_any_one_and_two_do_not() {
        let spread = |v: &[(&str, u32)]| {
            survives_region_loss(&v.iter().map(|(r, n)| (r.to_string(), *n)).collect())
        };
        let three = spread(&[("mumbai", 2), ("singapore", 2), ("hyderabad", 1)]);
        assert!(three.values().all(|s| *s), "{three:?}");
        let two = spread(&[("mumbai", 2), ("singapore", 1)]);
        assert!(!two["mumbai"], "losing the larger half loses the quorum");
        assert!(two["singapore"]);
        let even = spread(&[("mumbai", 2), ("singapore", 2)]);
        assert!(even.values().all(|s| !*s), "{even:?}");
        let one = spread(&[("mumbai", 3)]);
        assert!(!one["mumbai"]);
    }
}
#[cfg(test)]
mod manifest_tests {
    use crate::Manifest;

    const APP: &str = "[app]\nname = \"pay\"\ncomponent = \"p.wasm\"\nroute = \"/p\"\n";

    #[test]
    fn placement_in_a_manifest() {
        let m = Manifest::parse(
            "t.toml",
            &format!("{APP}[placement]\nnode_selector = {{ disk = \"ssd\" }}\n"),
        )
        .unwrap();
        assert!(m.placement.regions.is_none());
        let m = Manifest::parse(
            "t.toml",
            &format!("{APP}[placement]\nnode_selector = {{ disk = \"ssd\" }}\nregions = [\"a\", \"b\"]\n[placement.region.b]\nmin = 0\n"),
        )
        .unwrap();
        let r = m.placement.regions.as_ref().unwrap();
        assert_eq!((r.primary(), r.region["b"].min), ("a", Some(0)));
        assert_eq!(m.placement.node_selector["disk"], "ssd");
        let e = Manifest::parse(
            "t.toml",
            &format!("{APP}[placement]\nregions = [\"a\"]\nprimary = \"b\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("placement.primary"), "{e}");
        assert_eq!(e.line, 7, "{e}");
        let e = Manifest::parse(
            "t.toml",
            &format!("{APP}[placement]\nregions = [\"a\"]\nprimry = \"b\"\n"),
        );
        assert!(e.is_err(), "a misspelt key is refused: {e:?}");
        let e = Manifest::parse(
            "t.toml",
            &format!("{APP}[placement]\nnode_selectr = {{}}\n"),
        );
        assert!(e.is_err(), "a misspelt key is refused: {e:?}");
    }
}
