//! Which requests a rule applies to: host, method, path (exact, prefix, regex), headers and query
//! parameters, written the same way in every plugin's config (routing, retries, fault-injection,
//! ratelimit, auth). Enabled by the SDK's `matching` feature.
//!
//! ```toml
//! match = { hosts = ["api.example.com"], method = "GET", path_prefix = "/v1/",
//!           headers = { "x-env" = "canary", "x-debug" = { present = true } },
//!           query = { "user" = { regex = "^[0-9]+$" } } }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Request;
use crate::config::HostPattern;
use crate::text;

/// A request condition; every field given must hold (an empty match holds for every request).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// The authority is one of these (port ignored); absent or empty: any host.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// One method (`"GET"`), compared without regard to case.
    #[serde(default)]
    pub method: Option<String>,
    /// Several methods, any of which matches.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The path (without the query) is exactly this.
    #[serde(default)]
    pub path: Option<String>,
    /// The path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The path matches this regular expression (anchor it with `^...$` for a whole match).
    #[serde(default)]
    pub path_regex: Option<Regex>,
    /// Each named header matches.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Each named query parameter matches (values compared as sent, not percent-decoded).
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
}

/// How one header or query value must look. A plain string means `exact`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ValueMatch {
    /// The value is exactly this.
    Exact(String),
    /// The value matches every condition given.
    Spec(ValueSpec),
}

/// `{ exact = "..." }`, `{ prefix = "..." }`, `{ regex = "..." }` or `{ present = true|false }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSpec {
    #[serde(default)]
    /// The value is exactly this.
    pub exact: Option<String>,
    #[serde(default)]
    /// The value starts with this.
    pub prefix: Option<String>,
    #[serde(default)]
    /// The value matches this regular expression (regex-lite syntax).
    pub regex: Option<Regex>,
    /// `true`: the header is there (any value); `false`: it is not.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A regular expression from config, compiled once at load; a bad one refuses the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Regex(regex_lite::Regex);

impl TryFrom<String> for Regex {
    type Error = String;

    fn try_from(pattern: String) -> Result<Self, String> {
        regex_lite::Regex::new(&pattern)
            .map(Self)
            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
    }
}

impl Regex {
    /// Whether `text` matches every condition given.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

impl ValueMatch {
    /// Whether `value` (None: absent) satisfies this condition.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Self::Exact(exact) => value.is_some_and(|v| text::same(v.as_bytes(), exact.as_bytes())),
            Self::Spec(spec) => spec.matches(value),
        }
    }
}

impl ValueSpec {
    fn matches(&self, value: Option<&str>) -> bool {
        if let Some(present) = self.present
            && present != value.is_some()
        {
            return false;
        }
        let Some(value) = value else {
            // Only `present = false` (checked above) matches an absent value.
            return self.present == Some(false);
        };
        self.exact
            .as_deref()
            .is_none_or(|e| text::same(e.as_bytes(), value.as_bytes()))
            && self
                .prefix
                .as_deref()
                .is_none_or(|p| text::starts_with(value.as_bytes(), p.as_bytes()))
            && self.regex.as_ref().is_none_or(|r| r.is_match(value))
    }
}

impl RequestMatch {
    /// Checks a config after loading; `at` names it in the error (`"rules[0].match"`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        for (name, value) in self.headers.iter().chain(&self.query) {
            if let ValueMatch::Spec(spec) = value {
                let given = [
                    spec.exact.is_some(),
                    spec.prefix.is_some(),
                    spec.regex.is_some(),
                    spec.present.is_some(),
                ];
                if !given.contains(&true) {
                    return Err(format!(
                        "{at}: {name:?}: say how to match: exact, prefix, regex or present"
                    ));
                }
            }
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(format!("{at}.path_prefix: must start with '/'"));
        }
        Ok(())
    }

    /// Whether the path and query conditions hold for `full` (path and query).
    fn path_matches(&self, full: &str) -> bool {
        let (path, query) = match text::find(full.as_bytes(), b'?') {
            Some(at) => (&full[..at], &full[at + 1..]),
            None => (full, ""),
        };
        if self
            .path
            .as_deref()
            .is_some_and(|p| !text::same(p.as_bytes(), path.as_bytes()))
            || self
                .path_prefix
                .as_deref()
                .is_some_and(|p| !text::starts_with(path.as_bytes(), p.as_bytes()))
            || self.path_regex.as_ref().is_some_and(|r| !r.is_match(path))
        {
            return false;
        }
        self.query
            .iter()
            .all(|(name, condition)| condition.matches(query_param(query, name)))
    }

    /// Whether `req` satisfies every condition. Cheap conditions are checked first and the
    /// request is only read for what a condition needs.
    pub fn matches(&self, req: &Request) -> bool {
        if !self.hosts.is_empty() {
            let authority = req.authority().or_else(|| req.header("host"));
            let Some(authority) = authority else {
                return false;
            };
            if !self.hosts.iter().any(|h| h.matches(&authority)) {
                return false;
            }
        }
        if self.method.is_some() || !self.methods.is_empty() {
            let method = req.method();
            let one = self.method.iter().chain(&self.methods);
            if !one.into_iter().any(|m| m.eq_ignore_ascii_case(&method)) {
                return false;
            }
        }
        let wants_path = self.path.is_some()
            || self.path_prefix.is_some()
            || self.path_regex.is_some()
            || !self.query.is_empty();
        if wants_path && !req.with_path(|full| self.path_matches(full)) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, condition)| condition.matches(req.header(name).as_deref()))
    }
}

pub use crate::params::query_param;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    fn check(json: &str, host: TestHost) -> bool {
        let m: RequestMatch = serde_json::from_str(json).unwrap();
        m.validate("match").unwrap();
        let mut host = host;
        host.run(|| m.matches(&Request::handle()))
    }

    #[test]
    fn empty_matches_everything() {
        assert!(check("{}", TestHost::get("/anything")));
    }

    #[test]
    fn method_and_path() {
        let m = r#"{ "method": "GET", "path_regex": "^/v1(/.*)?$" }"#;
        assert!(check(m, TestHost::get("/v1")));
        assert!(check(m, TestHost::get("/v1/users?x=1")));
        assert!(!check(m, TestHost::get("/v10")));
        assert!(!check(m, TestHost::request("POST", "/v1")));
        let m = r#"{ "path_prefix": "/ratings" }"#;
        assert!(check(m, TestHost::get("/ratings/1")));
        assert!(!check(m, TestHost::get("/reviews")));
        let m = r#"{ "path": "/exact" }"#;
        assert!(check(m, TestHost::get("/exact?q")));
        assert!(!check(m, TestHost::get("/exact/more")));
    }

    #[test]
    fn headers_and_query() {
        let m = r#"{ "headers": { "x-fault": "yes", "x-debug": { "present": true }, "x-skip": { "present": false } },
                     "query": { "user": { "regex": "^[0-9]+$" } } }"#;
        let good = || {
            TestHost::get("/?user=42&x")
                .header("x-fault", "yes")
                .header("x-debug", "")
        };
        assert!(check(m, good()));
        assert!(!check(m, good().header("x-skip", "1")));
        assert!(!check(
            m,
            TestHost::get("/?user=42").header("x-fault", "yes")
        ));
        assert!(!check(
            m,
            TestHost::get("/?user=abc")
                .header("x-fault", "yes")
                .header("x-debug", "1")
        ));
    }

    #[test]
    fn hosts() {
        let m = r#"{ "hosts": ["*.example.com"] }"#;
        assert!(check(
            m,
            TestHost::get("/").authority("api.example.com:8080")
        ));
        assert!(!check(m, TestHost::get("/").authority("example.org")));
    }

    #[test]
    fn bad_conditions_are_refused() {
        let err = crate::parse_config_as::<RequestMatch>(r#"{ "path_regex": "(" }"#).unwrap_err();
        assert!(
            err.contains("path_regex") && err.contains("invalid regular expression"),
            "{err}"
        );
        let m: RequestMatch = serde_json::from_str(r#"{ "headers": { "x": {} } }"#).unwrap();
        assert!(
            m.validate("rules[0].match")
                .unwrap_err()
                .contains("rules[0].match")
        );
    }
}
