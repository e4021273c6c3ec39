//! Weighted traffic split across clusters (Istio's VirtualService `route[].weight`): 80/20
//! canaries, blue/green, instant rollback by setting a weight to 0. See README.md.

use serde::Deserialize;
use switchyard_sdk::config::HostPattern;
use switchyard_sdk::metrics::Counter;
use switchyard_sdk::{Action, Plugin, Request, log, random};

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Checked in order; the first rule whose hosts match the request's authority applies.
    pub rules: Vec<Rule>,
}

/// `[[plugin.config.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Authorities this rule splits (port ignored); `"*"` matches any, `"*.example.com"` any
    /// subdomain.
    pub hosts: Vec<HostPattern>,
    /// Where requests go, in proportion to `weight`.
    pub backends: Vec<Backend>,
    /// A request carrying this header with a backend's cluster name as value goes there,
    /// whatever the weights (even 0): how a tester reaches the canary before any user does.
    #[serde(default)]
    pub override_header: Option<String>,
    /// Requests with the same value of this header go to the same backend while the weights
    /// stay the same (session affinity for a canary).
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// The response carries this header with the chosen backend's cluster name, so clients and
    /// tests can see which side of the split served them (set from on_request: no response
    /// hook).
    #[serde(default)]
    pub response_header: Option<String>,
}

/// One destination of a split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub cluster: String,
    /// Relative share; Istio's convention is that a rule's weights add up to 100.
    pub weight: u32,
}

/// Picks a cluster per request by weight, override header or sticky header.
pub struct Canary {
    rules: Vec<Rule>,
    /// The `requests` metric of each rule's backends, by rule and backend index.
    requests: Vec<Vec<Counter>>,
}

impl Plugin for Canary {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        for (i, rule) in config.rules.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if rule.hosts.is_empty() {
                return Err(format!(
                    "{}: name at least one host (\"*\" for any)",
                    at("hosts")
                ));
            }
            if rule.backends.is_empty() {
                return Err(format!("{}: name at least one backend", at("backends")));
            }
            for (j, backend) in rule.backends.iter().enumerate() {
                if backend.cluster.trim().is_empty() {
                    return Err(format!(
                        "{}: must not be empty",
                        at(&format!("backends[{j}].cluster"))
                    ));
                }
            }
            if rule
                .backends
                .iter()
                .map(|b| u64::from(b.weight))
                .sum::<u64>()
                == 0
            {
                return Err(format!(
                    "{}: the weights add up to 0; give at least one backend a weight",
                    at("backends")
                ));
            }
            for header in [
                &rule.override_header,
                &rule.sticky_header,
                &rule.response_header,
            ]
            .into_iter()
            .flatten()
            {
                if header.trim().is_empty() {
                    return Err(format!(
                        "{}: a header name must not be empty",
                        at("override_header/sticky_header/response_header")
                    ));
                }
            }
        }
        let requests = config
            .rules
            .iter()
            .map(|rule| {
                let backend = |b: &Backend| Counter::new("requests", &[("backend", &b.cluster)]);
                rule.backends.iter().map(backend).collect()
            })
            .collect();
        Ok(Self {
            rules: config.rules,
            requests,
        })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        // The authority is asked for only when a rule needs it: a `"*"` rule matches without.
        let mut authority: Option<Option<String>> = None;
        let Some((at, rule)) = self.rules.iter().enumerate().find(|(_, rule)| {
            if rule.hosts.contains(&HostPattern::Any) {
                return true;
            }
            let authority = authority.get_or_insert_with(|| req.authority());
            authority
                .as_deref()
                .is_some_and(|a| rule.hosts.iter().any(|h| h.matches(a)))
        }) else {
            return Action::Continue;
        };
        let chosen = rule.choose(req);
        let backend = &rule.backends[chosen];
        match req.set_destination(&backend.cluster) {
            Ok(()) => self.requests[at][chosen].add(1),
            Err(e) => log::warn(&format!("canary: {e}")),
        }
        if let Some(header) = &rule.response_header {
            let _ = req.add_response_header(header, &backend.cluster);
        }
        Action::Continue
    }
}

impl Rule {
    /// The index of the backend this request goes to.
    fn choose(&self, req: &Request) -> usize {
        // Headers are looked at where they lie, not copied.
        let forced = self.override_header.as_deref().and_then(|name| {
            req.with_header(name, |value| {
                let value = value?.trim();
                self.backends.iter().position(|b| b.cluster == value)
            })
        });
        if let Some(forced) = forced {
            return forced;
        }
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        let sticky = self
            .sticky_header
            .as_deref()
            .and_then(|name| req.with_header(name, |value| value.map(|v| fnv1a(v.as_bytes()))));
        let ticket = match sticky {
            Some(hash) => hash % total,
            None => random::u64() % total,
        };
        self.by_ticket(ticket)
    }

    /// The index of the backend whose share of `[0, total)` holds `ticket`.
    fn by_ticket(&self, mut ticket: u64) -> usize {
        for (index, backend) in self.backends.iter().enumerate() {
            let weight = u64::from(backend.weight);
            if ticket < weight {
                return index;
            }
            ticket -= weight;
        }
        // `ticket < total` so the loop always returns; this keeps the type honest.
        self.backends.len() - 1
    }
}

/// A hash that is the same in every instance and every run, so stickiness survives recycling.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

switchyard_sdk::export_plugin!(Canary);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::TestHost;

    const SPLIT: &str = r#"{ "rules": [ {
        "hosts": ["myservice.default.svc.cluster.local", "myservice"],
        "backends": [ { "cluster": "v1", "weight": 80 }, { "cluster": "v2", "weight": 20 } ],
        "override_header": "x-canary",
        "sticky_header": "x-user-id"
    } ] }"#;

    fn route(canary: &Canary, host: TestHost) -> Option<String> {
        let mut host = host;
        assert_eq!(host.on_request(canary), Action::Continue);
        host.destination
    }

    #[test]
    fn splits_by_weight() {
        let canary = switchyard_sdk::load::<Canary>(SPLIT).unwrap();
        let mut host = TestHost::get("/").authority("myservice:8080");
        let mut v2 = 0;
        for _ in 0..10_000 {
            host.destination = None;
            host.on_request(&canary);
            if host.destination.as_deref() == Some("v2") {
                v2 += 1;
            }
        }
        assert!((1_800..=2_200).contains(&v2), "v2 got {v2} of 10000");
    }

    #[test]
    fn other_hosts_are_left_alone() {
        let canary = switchyard_sdk::load::<Canary>(SPLIT).unwrap();
        assert_eq!(route(&canary, TestHost::get("/").authority("other")), None);
    }

    #[test]
    fn override_header_forces_a_backend() {
        let canary = switchyard_sdk::load::<Canary>(SPLIT).unwrap();
        for _ in 0..50 {
            let host = TestHost::get("/")
                .authority("myservice")
                .header("x-canary", "v2");
            assert_eq!(route(&canary, host).as_deref(), Some("v2"));
        }
        // A value naming no backend is ignored.
        let host = TestHost::get("/")
            .authority("myservice")
            .header("x-canary", "v9");
        assert!(route(&canary, host).is_some_and(|c| c == "v1" || c == "v2"));
    }

    #[test]
    fn sticky_header_keeps_a_user_on_one_backend() {
        let canary = switchyard_sdk::load::<Canary>(SPLIT).unwrap();
        let mut seen = std::collections::HashSet::new();
        for user in 0..200 {
            let user = format!("user-{user}");
            let first = route(
                &canary,
                TestHost::get("/")
                    .authority("myservice")
                    .header("x-user-id", &user),
            );
            for _ in 0..5 {
                let again = route(
                    &canary,
                    TestHost::get("/")
                        .authority("myservice")
                        .header("x-user-id", &user),
                );
                assert_eq!(again, first);
            }
            seen.insert(first);
        }
        assert_eq!(seen.len(), 2, "users spread over both backends");
    }

    #[test]
    fn zero_weight_is_a_rollback_and_counts_per_backend() {
        let canary = switchyard_sdk::load::<Canary>(
            r#"{ "rules": [ { "hosts": ["*"], "backends": [ { "cluster": "v1", "weight": 100 }, { "cluster": "v2", "weight": 0 } ] } ] }"#,
        )
        .unwrap();
        let mut host = TestHost::get("/");
        for _ in 0..100 {
            host.on_request(&canary);
            assert_eq!(host.destination.as_deref(), Some("v1"));
        }
        assert_eq!(host.counter_total("requests", &[("backend", "v1")]), 100);
        assert_eq!(host.counter_total("requests", &[("backend", "v2")]), 0);
    }

    #[test]
    fn the_chosen_backend_can_be_named_in_a_response_header() {
        let named = switchyard_sdk::load::<Canary>(
            r#"{ "rules": [ { "hosts": ["*"], "backends": [ { "cluster": "v1", "weight": 80 }, { "cluster": "v2", "weight": 20 } ], "override_header": "x-canary", "response_header": "x-served-by" } ] }"#,
        )
        .unwrap();
        let mut host = TestHost::get("/").header("x-canary", "v2");
        host.on_request(&named);
        assert_eq!(
            host.response_headers_added,
            [("x-served-by".to_owned(), "v2".to_owned())]
        );
        // Without the option nothing is added, and the plugin has no response hook at all.
        let plain = switchyard_sdk::load::<Canary>(SPLIT).unwrap();
        let mut host = TestHost::get("/").authority("myservice").response(200);
        host.on_request(&plain);
        assert!(host.response_headers_added.is_empty());
        host.on_response(&plain);
        assert!(!host.last_hook_used);
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = switchyard_sdk::load::<Canary>(r#"{ "rules": [ { "hosts": ["*"], "backends": [ { "cluster": "v1", "weight": "x" } ] } ] }"#)
            .err()
            .unwrap();
        assert!(err.contains("rules[0].backends[0].weight"), "{err}");
        let err = switchyard_sdk::load::<Canary>(r#"{ "rules": [ { "hosts": ["*"], "backends": [ { "cluster": "v1", "weight": 0 } ] } ] }"#)
            .err()
            .unwrap();
        assert!(err.contains("rules[0].backends"), "{err}");
        let err = switchyard_sdk::load::<Canary>(
            r#"{ "rules": [ { "hosts": ["*.x"], "backends": [], "stick": "a" } ] }"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("unknown field `stick`"), "{err}");
    }
}
