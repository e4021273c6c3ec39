//! Fault injection (Istio's HTTPFaultInjection): delay or abort a percentage of matched requests
//! to test how callers cope with a slow or failing service. See README.md.

use serde::Deserialize;
use switchyard_sdk::config::{DurationText, Percent};
use switchyard_sdk::matching::RequestMatch;
use switchyard_sdk::{Action, LocalResponse, Plugin, Request, metrics};

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Checked in order; the first rule whose `match` holds applies.
    pub rules: Vec<Rule>,
}

/// `[[plugin.config.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's `rule` label in metrics; defaults to its position, "0", "1", ...
    #[serde(default)]
    pub name: Option<String>,
    /// Which requests the rule applies to; absent: all.
    #[serde(default, rename = "match")]
    pub matches: RequestMatch,
    #[serde(default)]
    pub delay: Option<Delay>,
    #[serde(default)]
    pub abort: Option<Abort>,
}

/// `delay = { fixed = "2s", percent = 10.0 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    pub fixed: DurationText,
    pub percent: Percent,
}

/// `abort = { status = 503, percent = 5.0 }`; gRPC requests get `grpc_status` (or the gRPC code
/// for `status`) in a trailers-only response, as gRPC clients expect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// The `grpc-message` gRPC clients see with the status.
    #[serde(default = "default_grpc_message")]
    pub grpc_message: String,
    pub percent: Percent,
}

fn default_grpc_message() -> String {
    "fault filter abort".to_owned()
}

fn default_status() -> u16 {
    503
}

/// Delays or aborts matched requests at the configured rates.
pub struct FaultInjection {
    rules: Vec<(String, Rule)>,
    /// Every rule is at 0%: nothing to match or draw.
    inert: bool,
}

impl Plugin for FaultInjection {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.into_iter().enumerate() {
            rule.matches.validate(&format!("rules[{i}].match"))?;
            if rule.delay.is_none() && rule.abort.is_none() {
                return Err(format!("rules[{i}]: give a delay, an abort or both"));
            }
            if let Some(abort) = &rule.abort
                && !(200..=599).contains(&abort.status)
            {
                return Err(format!(
                    "rules[{i}].abort.status: {} is not an HTTP status from 200 to 599",
                    abort.status
                ));
            }
            if let Some(code) = rule.abort.as_ref().and_then(|a| a.grpc_status)
                && code > 16
            {
                return Err(format!(
                    "rules[{i}].abort.grpc_status: {code} is not a gRPC status (0-16)"
                ));
            }
            if let Some(delay) = &rule.delay
                && delay.fixed.0.as_millis() > u128::from(u32::MAX)
            {
                return Err(format!("rules[{i}].delay.fixed: too long"));
            }
            let name = rule.name.clone().unwrap_or_else(|| i.to_string());
            rules.push((name, rule));
        }
        // Rules staged at 0% (to be raised by a reload) can never fire: with only those, no
        // request needs the hook at all.
        let inert = rules.iter().all(|(_, rule)| rule.never_fires());
        Ok(Self { rules, inert })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        if self.inert {
            // Decided by the config alone: the proxy stops calling this hook until a reload
            // loads other rules.
            return Action::unused();
        }
        let Some((name, rule)) = self
            .rules
            .iter()
            .find(|(_, rule)| rule.matches.matches(req))
        else {
            return Action::Continue;
        };
        // Istio draws the two independently. A request drawn for both is aborted at once: the
        // host cannot answer after a delay, and holding a request that will fail anyway only
        // ties up a connection.
        if let Some(abort) = &rule.abort
            && abort.percent.sample()
        {
            metrics::counter("faults", &[("rule", name), ("kind", "abort")], 1);
            return Action::Respond(abort.response(is_grpc(req)));
        }
        if let Some(delay) = &rule.delay
            && delay.percent.sample()
        {
            metrics::counter("faults", &[("rule", name), ("kind", "delay")], 1);
            return Action::Delay(delay.fixed.0);
        }
        Action::Continue
    }
}

impl Rule {
    /// Neither its abort nor its delay can be drawn.
    fn never_fires(&self) -> bool {
        let zero = |percent: Percent| percent.value() <= 0.0;
        self.abort.as_ref().is_none_or(|a| zero(a.percent))
            && self.delay.as_ref().is_none_or(|d| zero(d.percent))
    }
}

impl Abort {
    fn response(&self, grpc: bool) -> LocalResponse {
        let body = "fault filter abort\n";
        if !grpc {
            return LocalResponse::new(self.status)
                .header("content-type", "text/plain")
                .header("x-switchyard-fault", "abort")
                .body(body);
        }
        // gRPC: HTTP 200 with the status in the headers (a "trailers-only" response).
        let code = self
            .grpc_status
            .unwrap_or_else(|| grpc_code_for(self.status));
        LocalResponse::new(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", percent_encode(&self.grpc_message))
            .header("x-switchyard-fault", "abort")
    }
}

/// gRPC requests proper: `application/grpc`, `application/grpc+proto`... (gRPC-Web is turned into
/// gRPC by the listener before plugins run).
fn is_grpc(req: &Request) -> bool {
    req.header("content-type")
        .is_some_and(|ct| switchyard_sdk::grpc::is_grpc_content_type(&ct))
}

/// `grpc-message` is percent-encoded: `%` and bytes outside printable ASCII.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The gRPC code a client would see for an HTTP status (gRPC's http-grpc-status-mapping.md).
fn grpc_code_for(status: u16) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

switchyard_sdk::export_plugin!(FaultInjection);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use switchyard_sdk::testing::TestHost;

    const ISTIO: &str = r#"{ "rules": [ {
        "match": { "path_prefix": "/ratings", "headers": { "x-fault": "yes" } },
        "delay": { "fixed": "2s", "percent": 10.0 },
        "abort": { "status": 503, "percent": 5.0 }
    } ] }"#;

    fn faults(json: &str) -> FaultInjection {
        switchyard_sdk::load::<FaultInjection>(json).unwrap()
    }

    #[test]
    fn rates_hold_over_many_requests() {
        let plugin = faults(ISTIO);
        let mut host = TestHost::get("/ratings/1").header("x-fault", "yes");
        let (mut delayed, mut aborted) = (0, 0);
        for _ in 0..10_000 {
            match host.on_request(&plugin) {
                Action::Delay(d) => {
                    assert_eq!(d, Duration::from_secs(2));
                    delayed += 1;
                }
                Action::Respond(r) => {
                    assert_eq!(r.status, 503);
                    aborted += 1;
                }
                Action::Continue => {}
                other => panic!("{other:?}"),
            }
        }
        // 5% aborted; 10% of the remaining 95% delayed.
        assert!((400..=600).contains(&aborted), "{aborted} aborted");
        assert!((800..=1100).contains(&delayed), "{delayed} delayed");
        assert_eq!(
            host.counter_total("faults", &[("rule", "0"), ("kind", "abort")]),
            aborted
        );
    }

    #[test]
    fn rules_staged_at_zero_percent_cost_nothing_and_still_shadow_later_ones() {
        let staged = faults(
            r#"{ "rules": [ { "abort": { "percent": 0 }, "delay": { "fixed": "1s", "percent": 0 } } ] }"#,
        );
        assert!(staged.inert, "nothing can fire: not even the path is read");
        let mut host = TestHost::get("/");
        assert_eq!(host.on_request(&staged), Action::Continue);
        assert!(
            !host.last_hook_used,
            "the proxy is told to stop calling the hook"
        );
        // The first matching rule decides, even at 0%: the 100% rule after it never applies.
        let shadowing = faults(
            r#"{ "rules": [ { "abort": { "percent": 0 } }, { "abort": { "percent": 100 } } ] }"#,
        );
        assert!(!shadowing.inert);
        assert_eq!(host.on_request(&shadowing), Action::Continue);
        assert!(host.last_hook_used, "a rule that matches must be drawn for");
        let live = faults(r#"{ "rules": [ { "abort": { "percent": 100 } } ] }"#);
        assert!(!live.inert);
        assert!(matches!(host.on_request(&live), Action::Respond(_)));
    }

    #[test]
    fn unmatched_requests_are_untouched() {
        let plugin = faults(ISTIO);
        let mut no_header = TestHost::get("/ratings/1");
        let mut other_path = TestHost::get("/reviews").header("x-fault", "yes");
        for _ in 0..1_000 {
            assert_eq!(no_header.on_request(&plugin), Action::Continue);
            assert_eq!(other_path.on_request(&plugin), Action::Continue);
        }
    }

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let plugin = faults(r#"{ "rules": [ { "abort": { "status": 503, "percent": 100 } } ] }"#);
        let mut host =
            TestHost::request("POST", "/pkg.Svc/Call").header("content-type", "application/grpc");
        let Action::Respond(r) = host.on_request(&plugin) else {
            panic!("not aborted")
        };
        assert_eq!(r.status, 200);
        assert!(
            r.headers.contains(&("grpc-status".into(), "14".into())),
            "{r:?}"
        );
        let explicit =
            faults(r#"{ "rules": [ { "abort": { "grpc_status": 8, "percent": 100 } } ] }"#);
        let Action::Respond(r) = host.on_request(&explicit) else {
            panic!("not aborted")
        };
        assert!(
            r.headers.contains(&("grpc-status".into(), "8".into())),
            "{r:?}"
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = switchyard_sdk::load::<FaultInjection>(
            r#"{ "rules": [ { "abort": { "status": 503, "percent": 150 } } ] }"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("rules[0].abort.percent"), "{err}");
        let err = switchyard_sdk::load::<FaultInjection>(
            r#"{ "rules": [ { "delay": { "fixed": "soon", "percent": 1 } } ] }"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("rules[0].delay.fixed"), "{err}");
        let err = switchyard_sdk::load::<FaultInjection>(
            r#"{ "rules": [ { "match": { "path_prefix": "/x" } } ] }"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("rules[0]"), "{err}");
    }
}
