//! Local rate limiting with token buckets (Envoy's local_ratelimit, keyed like its descriptors):
//! per header value, per client identity, per client IP, or one bucket per rule. Buckets live in
//! the plugin's shared store, so every instance and worker spends from the same bucket.
//! See README.md.

mod bucket;

use std::time::Duration;

use serde::Deserialize;
use switchyard_sdk::config::DurationText;
use switchyard_sdk::matching::RequestMatch;
use switchyard_sdk::metrics::Counter;
use switchyard_sdk::{Action, LocalResponse, Plugin, Request};

use bucket::{Bucket, Verdict};

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every rule whose `match` holds is applied; the request must pass them all.
    pub rules: Vec<Rule>,
}

/// `[[plugin.config.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Names the rule's buckets and its `rule` metric label.
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RequestMatch,
    /// What gets its own bucket: `"header:NAME"`, `"identity"` (mTLS peer), `"peer_ip"`, or
    /// `"route"` (one bucket for every request the rule matches).
    #[serde(default = "default_key")]
    pub key: Key,
    /// Bucket size: how many requests may come at once after a quiet spell.
    pub burst: u32,
    /// Tokens added every `per`.
    pub rate: u32,
    #[serde(default = "default_per")]
    pub per: DurationText,
}

fn default_key() -> Key {
    Key::Route
}

fn default_per() -> DurationText {
    DurationText(Duration::from_secs(1))
}

/// What a bucket is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Key {
    Header(String),
    Identity,
    PeerIp,
    Route,
}

impl TryFrom<String> for Key {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "identity" => Ok(Self::Identity),
            "peer_ip" => Ok(Self::PeerIp),
            "route" => Ok(Self::Route),
            _ => match text.strip_prefix("header:") {
                Some(name) if !name.trim().is_empty() => {
                    Ok(Self::Header(name.trim().to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "unknown key {text:?}: expected \"header:NAME\", \"identity\", \"peer_ip\" or \"route\""
                )),
            },
        }
    }
}

/// Answers 429 once a bucket is empty.
pub struct RateLimit {
    rules: Vec<Limit>,
}

/// A rule, its buckets, and its `decisions` metric.
struct Limit {
    rule: Rule,
    bucket: Bucket,
    allowed: Counter,
    limited: Counter,
}

impl Plugin for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            rule.matches.validate(&format!("{at}.match"))?;
            if rule.burst == 0 {
                return Err(format!("{at}.burst: must be at least 1"));
            }
            if rule.rate == 0 {
                return Err(format!(
                    "{at}.rate: must be at least 1 (a rule that never refills blocks forever)"
                ));
            }
            if rule.per.0 < Duration::from_millis(1) {
                return Err(format!("{at}.per: must be at least 1ms"));
            }
            if rules.iter().any(|l: &Limit| l.rule.name == rule.name) {
                return Err(format!(
                    "{at}.name: {:?} is used by another rule",
                    rule.name
                ));
            }
            let decisions =
                |result| Counter::new("decisions", &[("rule", &rule.name), ("result", result)]);
            rules.push(Limit {
                bucket: Bucket::new(rule.burst, rule.rate, rule.per.0),
                allowed: decisions("allowed"),
                limited: decisions("limited"),
                rule,
            });
        }
        Ok(Self { rules })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        for Limit {
            rule,
            bucket,
            allowed,
            limited,
        } in &self.rules
        {
            if !rule.matches.matches(req) {
                continue;
            }
            // A request without the key (no header, no client certificate) is not limited by
            // this rule: it has no bucket to spend from.
            let Some(key) = rule.key.of(req) else {
                continue;
            };
            match bucket.take(&format!("{}/{key}", rule.name)) {
                Verdict::Allowed => allowed.add(1),
                Verdict::Limited { retry_after } => {
                    limited.add(1);
                    return Action::Respond(too_many_requests(rule, retry_after));
                }
            }
        }
        Action::Continue
    }
}

impl Key {
    fn of(&self, req: &Request) -> Option<String> {
        match self {
            Self::Header(name) => req.header(name),
            Self::Identity => req.peer_identity().and_then(|id| {
                id.spiffe_id
                    .or_else(|| id.dns_names.into_iter().next())
                    .or(id.subject)
            }),
            Self::PeerIp => {
                let peer = req.peer_address();
                Some(match peer.rsplit_once(':') {
                    Some((ip, _port)) => ip.to_owned(),
                    None => peer,
                })
            }
            Self::Route => Some(String::new()),
        }
    }
}

/// 429 with `Retry-After` and the IETF `RateLimit` headers, so well-behaved clients back off.
fn too_many_requests(rule: &Rule, retry_after: Duration) -> LocalResponse {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let seconds = seconds.max(1).to_string();
    let window = rule.per.0.as_secs().max(1);
    LocalResponse::new(429)
        .header("retry-after", &seconds)
        .header("ratelimit-limit", rule.burst.to_string())
        .header("ratelimit-remaining", "0")
        .header("ratelimit-reset", &seconds)
        .header("ratelimit-policy", format!("{};w={window}", rule.rate))
        .header(
            "ratelimit",
            format!("limit={}, remaining=0, reset={seconds}", rule.burst),
        )
        .header("content-type", "text/plain")
        .body(format!(
            "rate limited by rule {:?}; retry in {seconds}s\n",
            rule.name
        ))
}

switchyard_sdk::export_plugin!(RateLimit);

#[cfg(test)]
mod tests;
