//! The auth plugin's `[plugin.config]`, and its checks at load.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use switchyard_sdk::config::DurationText;
use switchyard_sdk::matching::RequestMatch;

use crate::api_key::ApiKeys;
use crate::jwt::{Algorithm, Expectations, Key};

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// JWT issuers whose tokens are accepted (`Authorization: Bearer ...`).
    #[serde(default)]
    pub jwt: Vec<JwtProvider>,
    #[serde(default)]
    pub api_keys: Option<ApiKeys>,
    /// Checked in order; the first whose `match` holds decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What happens to a request no rule matches.
    #[serde(default = "default_action")]
    pub default: RuleAction,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_action() -> RuleAction {
    RuleAction::Deny
}

fn default_realm() -> String {
    "switchyard".into()
}

/// `[[plugin.config.jwt]]`: one token issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// Names the provider in logs and its JWKS cache entry.
    pub name: String,
    /// The `iss` tokens must carry; tokens from other issuers are left to other providers.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The token's `aud` must name one of these (when any are given).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: DurationText,
    /// Refuse tokens without `exp` (on by default: a token that never expires is a liability).
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Keys given in the config.
    #[serde(default)]
    pub keys: Vec<InlineKey>,
    /// Keys fetched from the issuer's JWKS endpoint through a cluster.
    #[serde(default)]
    pub jwks: Option<JwksSource>,
    /// Claims copied to request headers, `claim = "header"` (e.g. `sub = "x-user-id"`); the
    /// client's own values of those headers are always removed.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Keep the `Authorization` header for the upstream (removed by default once verified).
    #[serde(default)]
    pub forward_token: bool,
}

fn default_leeway() -> DurationText {
    DurationText(Duration::from_secs(30))
}

fn yes() -> bool {
    true
}

/// `keys = [ { kid = "k1", alg = "HS256", secret = "..." }, { alg = "RS256", pem = "..." } ]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineKey {
    #[serde(default)]
    pub kid: Option<String>,
    pub alg: Algorithm,
    /// HS256 only: the shared secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256 / ES256: the public key in PEM.
    #[serde(default)]
    pub pem: Option<String>,
}

/// `jwks = { cluster = "idp", path = "/.well-known/jwks.json", ttl = "5m" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSource {
    pub cluster: String,
    #[serde(default = "default_jwks_path")]
    pub path: String,
    /// How long fetched keys are used before fetching again.
    #[serde(default = "default_jwks_ttl")]
    pub ttl: DurationText,
    /// Sent as the `Host` of the fetch (some identity providers route by it).
    #[serde(default)]
    pub host: Option<String>,
}

fn default_jwks_path() -> String {
    "/.well-known/jwks.json".into()
}

fn default_jwks_ttl() -> DurationText {
    DurationText(Duration::from_secs(300))
}

/// `[[plugin.config.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Named in refusals and logs.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: RequestMatch,
    #[serde(default = "default_rule_action")]
    pub action: RuleAction,
    /// The credentials a matched request must carry.
    #[serde(default)]
    pub require: Require,
    /// The mTLS peer's SPIFFE ID must be one of these (a trailing `*` matches any rest).
    #[serde(default)]
    pub spiffe_ids: Vec<SpiffePattern>,
    /// JWT claims that must hold: equal, or contained in an array / space-separated scope.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

fn default_rule_action() -> RuleAction {
    RuleAction::Allow
}

/// A rule's (or the default) decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Allow,
    Deny,
}

/// Which credentials a rule demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    /// Nothing (peer identity and claims rules still apply).
    #[default]
    None,
    Jwt,
    ApiKey,
    /// A JWT or an API key.
    Any,
}

/// `spiffe://cluster.local/ns/default/sa/frontend`, or a prefix ending in `*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct SpiffePattern(String);

impl TryFrom<String> for SpiffePattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !text.starts_with("spiffe://") {
            return Err(format!(
                "{text:?} is not a SPIFFE ID (spiffe://trust-domain/path)"
            ));
        }
        if text.trim_end_matches('*').contains('*') {
            return Err(format!("{text:?}: only a trailing * is allowed"));
        }
        Ok(Self(text))
    }
}

impl SpiffePattern {
    pub fn matches(&self, id: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => self.0 == id,
        }
    }
}

impl JwtProvider {
    pub fn expectations(&self) -> Expectations {
        Expectations {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            leeway: self.leeway.0,
            require_exp: self.require_exp,
        }
    }
}

impl Config {
    /// Checks what serde cannot and builds the inline keys of each provider.
    pub fn validate(&self) -> Result<Vec<Vec<Key>>, String> {
        let mut inline = Vec::with_capacity(self.jwt.len());
        for (i, provider) in self.jwt.iter().enumerate() {
            let at = format!("jwt[{i}]");
            if self.jwt[..i].iter().any(|p| p.name == provider.name) {
                return Err(format!("{at}.name: {:?} is used twice", provider.name));
            }
            if provider.keys.is_empty() && provider.jwks.is_none() {
                return Err(format!("{at}: give keys, jwks or both"));
            }
            let mut keys = Vec::with_capacity(provider.keys.len());
            for (k, key) in provider.keys.iter().enumerate() {
                keys.push(key.build().map_err(|e| format!("{at}.keys[{k}]: {e}"))?);
            }
            if let Some(jwks) = &provider.jwks
                && !jwks.path.starts_with('/')
            {
                return Err(format!("{at}.jwks.path: must start with '/'"));
            }
            for header in provider.forward_claims.values() {
                switchyard_sdk::config::check_header_name(header)
                    .map_err(|e| format!("{at}.forward_claims: {e}"))?;
            }
            inline.push(keys);
        }
        if let Some(keys) = &self.api_keys {
            keys.validate().map_err(|e| format!("api_keys.{e}"))?;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            rule.matches.validate(&format!("{at}.match"))?;
            let needs_jwt = rule.require == Require::Jwt || !rule.claims.is_empty();
            if needs_jwt && self.jwt.is_empty() {
                return Err(format!(
                    "{at}: needs a JWT but no [[plugin.config.jwt]] provider is configured"
                ));
            }
            if rule.require == Require::ApiKey && self.api_keys.is_none() {
                return Err(format!(
                    "{at}.require: api_key, but [plugin.config.api_keys] is not configured"
                ));
            }
        }
        Ok(inline)
    }
}

impl InlineKey {
    fn build(&self) -> Result<Key, String> {
        match (self.alg, &self.secret, &self.pem) {
            (Algorithm::HS256, Some(secret), None) => {
                if secret.len() < 32 {
                    return Err("secret: an HS256 secret needs at least 32 bytes".into());
                }
                Ok(Key::hmac(self.kid.clone(), secret.as_bytes()))
            }
            (Algorithm::HS256, _, _) => Err("HS256 takes `secret` (and no `pem`)".into()),
            (alg, None, Some(pem)) => {
                Key::from_pem(self.kid.clone(), alg, pem).map_err(|e| format!("pem: {e}"))
            }
            (alg, _, _) => Err(format!("{} takes `pem` (and no `secret`)", alg.name())),
        }
    }
}
