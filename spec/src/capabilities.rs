//! What a guest may reach outside its sandbox. Everything is denied unless granted.
//!
//! A component gets no filesystem, no environment variables, no configuration and no
//! outbound network unless its manifest (or `dabba serve` flags) lists them. Outbound
//! HTTP is granted per destination with rules of the form `scheme://host[:port]`, as in
//! Spin's `allowed_outbound_hosts`: `https://api.example.com`, `http://127.0.0.1:8080`,
//! `https://*.example.com`, `*://example.com:*`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Everything a component is granted beyond computing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Environment variables the guest sees (nothing of the host's own environment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Values served by `wasi:config/store`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Config keys served from the namespace's secrets (`crate::secret`): the listing,
    /// never a value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::secret::SecretRef>,
    /// Destinations the guest may send HTTP requests to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<OutboundRule>,
    /// `wasi:keyvalue` buckets the guest may open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_value_buckets: Vec<String>,
}

impl Capabilities {
    /// Whether a request to `scheme://host:port` is allowed by any rule.
    pub fn allows_outbound(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.allowed_outbound_hosts
            .iter()
            .any(|r| r.matches(scheme, host, port))
    }

    /// Whether the guest may open the bucket named `name`.
    pub fn allows_bucket(&self, name: &str) -> bool {
        self.key_value_buckets.iter().any(|b| b == name)
    }
}

/// One `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutboundRule {
    scheme: Pattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pattern {
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPattern {
    Any,
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
    Suffix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PortPattern {
    Any,
    Exact(u16),
    /// No port was written: the scheme's default port (80 for http, 443 for https).
    SchemeDefault,
}

/// Why an outbound rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundRuleError {
    #[error("`{0}` has no scheme: write it as `https://{0}` (or `*://{0}` for any scheme)")]
    NoScheme(String),
    #[error("`{rule}` has an unsupported scheme `{scheme}`: expected http, https or *")]
    Scheme { rule: String, scheme: String },
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error("`{rule}` has a bad port `{port}`: expected a number from 1 to 65535 or *")]
    Port { rule: String, port: String },
    #[error("`{0}` may name only scheme, host and port, not a path")]
    Path(String),
    #[error(
        "`{0}` has a wildcard in the middle of the host: only a leading `*.` or a whole `*` is allowed"
    )]
    Wildcard(String),
}

impl OutboundRule {
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let scheme_ok = match &self.scheme {
            Pattern::Any => true,
            Pattern::Exact(s) => *s == scheme,
        };
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => p == port,
            PortPattern::SchemeDefault => default_port(&scheme) == Some(port),
        };
        scheme_ok && host_ok && port_ok
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl FromStr for OutboundRule {
    type Err = OutboundRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rule = text.trim();
        let Some((scheme, rest)) = rule.split_once("://") else {
            return Err(OutboundRuleError::NoScheme(rule.to_string()));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => Pattern::Any,
            s @ ("http" | "https") => Pattern::Exact(s.to_string()),
            other => {
                return Err(OutboundRuleError::Scheme {
                    rule: rule.to_string(),
                    scheme: other.to_string(),
                });
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('?') {
            return Err(OutboundRuleError::Path(rule.to_string()));
        }
        let (host, port) = split_host_port(authority);
        if host.is_empty() {
            return Err(OutboundRuleError::NoHost(rule.to_string()));
        }
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(OutboundRuleError::Wildcard(rule.to_string()));
            }
            HostPattern::Suffix(suffix.to_string())
        } else if host.contains('*') {
            return Err(OutboundRuleError::Wildcard(rule.to_string()));
        } else {
            HostPattern::Exact(host)
        };
        let port = match port {
            None => PortPattern::SchemeDefault,
            Some("*") => PortPattern::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => PortPattern::Exact(n),
                _ => {
                    return Err(OutboundRuleError::Port {
                        rule: rule.to_string(),
                        port: p.to_string(),
                    });
                }
            },
        };
        Ok(OutboundRule { scheme, host, port })
    }
}

/// Splits `host:port`, `[::1]:port` or a bare host.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Pattern::Any => f.write_str("*")?,
            Pattern::Exact(s) => f.write_str(s)?,
        }
        f.write_str("://")?;
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Suffix(s) => write!(f, "*.{s}")?,
            HostPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]")?,
            HostPattern::Exact(h) => f.write_str(h)?,
        }
        match self.port {
            PortPattern::Any => f.write_str(":*"),
            PortPattern::Exact(p) => write!(f, ":{p}"),
            PortPattern::SchemeDefault => Ok(()),
        }
    }
}

impl Serialize for OutboundRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OutboundRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> OutboundRule {
        s.parse().unwrap()
    }

    #[test]
    fn exact_rules_match_scheme_host_and_default_port() {
        let r = rule("https://api.example.com");
        assert!(r.matches("https", "api.example.com", 443));
        assert!(r.matches("HTTPS", "API.example.com", 443));
        assert!(!r.matches("http", "api.example.com", 80));
        assert!(!r.matches("https", "api.example.com", 8443));
        assert!(!r.matches("https", "evil.com", 443));
        assert!(!r.matches("https", "api.example.com.evil.com", 443));
    }

    #[test]
    fn wildcards_cover_subdomains_ports_and_schemes() {
        let r = rule("https://*.example.com");
        assert!(r.matches("https", "a.example.com", 443));
        assert!(r.matches("https", "a.b.example.com", 443));
        assert!(!r.matches("https", "example.com", 443));
        assert!(!r.matches("https", "badexample.com", 443));
        let any = rule("*://127.0.0.1:*");
        assert!(any.matches("http", "127.0.0.1", 9000));
        assert!(any.matches("https", "127.0.0.1", 1));
        assert!(!any.matches("http", "127.0.0.2", 9000));
        let v6 = rule("http://[::1]:8080");
        assert!(v6.matches("http", "::1", 8080));
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let caps = Capabilities::default();
        assert!(!caps.allows_outbound("https", "example.com", 443));
        assert!(!caps.allows_bucket("default"));
    }

    #[test]
    fn malformed_rules_say_what_is_wrong() {
        assert!(matches!(
            "example.com".parse::<OutboundRule>(),
            Err(OutboundRuleError::NoScheme(_))
        ));
        assert!(matches!(
            "ftp://example.com".parse::<OutboundRule>(),
            Err(OutboundRuleError::Scheme { .. })
        ));
        assert!(matches!(
            "https://example.com/path".parse::<OutboundRule>(),
            Err(OutboundRuleError::Path(_))
        ));
        assert!(matches!(
            "https://ex*ample.com".parse::<OutboundRule>(),
            Err(OutboundRuleError::Wildcard(_))
        ));
        assert!(matches!(
            "https://example.com:99999".parse::<OutboundRule>(),
            Err(OutboundRuleError::Port { .. })
        ));
        assert!(matches!(
            "https://".parse::<OutboundRule>(),
            Err(OutboundRuleError::NoHost(_))
        ));
        let msg = "example.com"
            .parse::<OutboundRule>()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("https://example.com"), "{msg}");
    }

    #[test]
    fn rules_round_trip_through_text() {
        for s in [
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "*://*.example.com:*",
            "http://[::1]:80",
        ] {
            assert_eq!(rule(s).to_string(), s);
        }
    }
}
