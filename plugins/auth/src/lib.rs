//! Authentication and authorization at the proxy: JWTs (HS256/RS256/ES256, keys inline or from a
//! JWKS fetched through a cluster and cached), API keys stored as SHA-256 hashes, and rules that
//! allow requests by mTLS peer identity (SPIFFE ID) and claims, like an Istio
//! RequestAuthentication plus AuthorizationPolicy. See README.md.

mod api_key;
mod config;
mod jwks;
mod jwt;
#[cfg(not(target_arch = "wasm32"))]
pub mod mint;
mod verified;

use std::rc::Rc;

use switchyard_sdk::metrics::Counter;
use switchyard_sdk::{Action, LocalResponse, Plugin, Request, clock};

pub use config::{Config, Require, RuleAction};
use jwt::Token;

/// Authenticates and authorizes every request.
pub struct Auth {
    config: Config,
    keys: jwks::KeyCache,
    /// Headers this plugin sets from credentials; a client's own copies are removed first.
    identity_headers: Vec<String>,
    /// Signatures already verified by this instance.
    verified: verified::VerifiedTokens,
    /// What each JWT provider's claims must satisfy, built once rather than per request.
    expectations: Vec<jwt::Expectations>,
    /// The configured API keys as digests, with the keys already matched.
    api_keys: Option<api_key::KeyTable>,
    decisions: Decisions,
}

/// The `decisions` metric, one counter per result.
struct Decisions {
    allowed: Counter,
    unauthenticated: Counter,
    denied: Counter,
}

impl Decisions {
    fn new() -> Self {
        let result = |r| Counter::new("decisions", &[("result", r)]);
        Self {
            allowed: result("allowed"),
            unauthenticated: result("unauthenticated"),
            denied: result("denied"),
        }
    }
}

/// Who the request proved to be.
#[derive(Default)]
struct Credentials<'t> {
    /// The verified token and the index of the provider that issued it.
    jwt: Option<(usize, Token<'t>)>,
    /// The name of the API key presented.
    api_key: Option<&'t str>,
}

/// A refusal: 401 (with a challenge) or 403.
struct Refusal {
    status: u16,
    reason: String,
    /// For 401: the `WWW-Authenticate` error code (none when credentials were missing).
    error: Option<&'static str>,
}

impl Plugin for Auth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let inline = config.validate()?;
        let mut identity_headers: Vec<String> = config
            .jwt
            .iter()
            .flat_map(|p| p.forward_claims.values().cloned())
            .collect();
        identity_headers.extend(config.api_keys.as_ref().and_then(|k| k.forward_as.clone()));
        let expectations = config.jwt.iter().map(|p| p.expectations()).collect();
        let api_keys = config.api_keys.as_ref().map(api_key::KeyTable::new);
        // Only remote JWKS are fetched; without them the hooks run as plain calls.
        if config.jwt.iter().all(|provider| provider.jwks.is_none()) {
            switchyard_sdk::http::never_call_out();
        }
        Ok(Self {
            keys: jwks::KeyCache::new(inline),
            config,
            identity_headers,
            verified: verified::VerifiedTokens::default(),
            expectations,
            api_keys,
            decisions: Decisions::new(),
        })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        // Only read the token when some provider can check it.
        let authorization = (!self.config.jwt.is_empty())
            .then(|| req.header("authorization"))
            .flatten();
        let bearer = authorization.as_deref().and_then(bearer_token);
        // A presented key is looked up where it lies, not copied.
        let presented_key = match (&self.config.api_keys, &self.api_keys) {
            (Some(keys), Some(table)) => {
                req.with_header(&keys.header, |key| key.map(|key| table.lookup(key)))
            }
            _ => None,
        };
        // After reading the credentials, so the removals go to the proxy with this hook's other
        // changes in one call rather than before the reads.
        for name in &self.identity_headers {
            req.remove_header(name);
        }
        let outcome = self
            .authenticate(bearer, presented_key)
            .and_then(|credentials| self.authorize(req, &credentials).map(|()| credentials));
        match outcome {
            Ok(credentials) => {
                self.forward(req, &credentials);
                self.decisions.allowed.add(1);
                Action::Continue
            }
            Err(refusal) => {
                let result = if refusal.status == 401 {
                    &self.decisions.unauthenticated
                } else {
                    &self.decisions.denied
                };
                result.add(1);
                Action::Respond(self.refuse(refusal))
            }
        }
    }
}

impl Auth {
    /// Checks whatever credentials came (`api_key`: a key was presented, and its index among the
    /// configured keys if it is one); presenting a bad one is refused even where none is
    /// required (as Istio's RequestAuthentication does).
    fn authenticate<'t>(
        &'t self,
        bearer: Option<&'t str>,
        api_key: Option<Option<usize>>,
    ) -> Result<Credentials<'t>, Refusal> {
        let mut credentials = Credentials::default();
        if let Some(token) = bearer
            && !self.config.jwt.is_empty()
        {
            credentials.jwt = Some(self.verify(token).map_err(|reason| Refusal {
                status: 401,
                reason,
                error: Some("invalid_token"),
            })?);
        }
        if let (Some(known), Some(keys)) = (api_key, &self.config.api_keys) {
            let index = known.ok_or_else(|| Refusal {
                status: 401,
                reason: "unknown API key".into(),
                error: Some("invalid_key"),
            })?;
            credentials.api_key = keys.keys.get(index).map(|k| k.name.as_str());
        }
        Ok(credentials)
    }

    /// Finds a provider whose keys verify `token` and whose claims checks pass.
    fn verify<'t>(&self, token: &'t str) -> Result<(usize, Token<'t>), String> {
        let now = clock::monotonic();
        if let Some(known) = self.verified.get(token, now)
            && let Some(expected) = self.expectations.get(known.provider)
        {
            known
                .facts
                .check(expected, known.wall_secs(now))
                .map_err(|e| e.0)?;
            let remembered = Token::remembered(token, &known.alg, Rc::clone(&known.claims));
            return Ok((known.provider, remembered));
        }
        let wall_ms = clock::wall_ms();
        let now_secs = wall_ms / 1000;
        let parsed = Token::parse(token).map_err(|e| e.0)?;
        let issuer = parsed.claims.get("iss").and_then(|v| v.as_str());
        let mut last_error = "no provider accepts this token".to_owned();
        for (index, provider) in self.config.jwt.iter().enumerate() {
            if provider
                .issuer
                .as_deref()
                .is_some_and(|i| Some(i) != issuer)
            {
                continue;
            }
            let keys = match self.keys.keys(index, provider) {
                Ok(keys) => keys,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let candidates = keys.iter().filter(|key| {
                key.alg.name() == parsed.alg
                    && (parsed.kid.is_none() || key.kid.is_none() || key.kid == parsed.kid)
            });
            let mut signed = false;
            for key in candidates {
                if parsed.verify_signature(key).is_ok() {
                    signed = true;
                    break;
                }
            }
            if !signed {
                last_error = "bad signature".into();
                continue;
            }
            let expected = &self.expectations[index];
            let facts = jwt::ClaimFacts::read(&parsed.claims, expected);
            let claims = Rc::clone(&parsed.claims);
            let verified_at = verified::ClockReading {
                monotonic: now,
                wall_ms,
            };
            self.verified
                .remember(token, index, &parsed.alg, claims, facts, verified_at);
            return match facts.check(expected, now_secs) {
                Ok(()) => Ok((index, parsed)),
                Err(e) => Err(e.0),
            };
        }
        Err(last_error)
    }

    /// Applies the first rule that matches, or the default.
    fn authorize(&self, req: &Request, credentials: &Credentials<'_>) -> Result<(), Refusal> {
        let forbidden = |reason: String| Refusal {
            status: 403,
            reason,
            error: None,
        };
        let Some((index, rule)) = self
            .config
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches.matches(req))
        else {
            return match self.config.default {
                RuleAction::Allow => Ok(()),
                RuleAction::Deny => Err(forbidden("no rule allows this request".into())),
            };
        };
        // Only refusals name the rule: no allocation on the way through.
        let name = || {
            rule.name
                .clone()
                .unwrap_or_else(|| format!("rules[{index}]"))
        };
        if rule.action == RuleAction::Deny {
            return Err(forbidden(format!("denied by {}", name())));
        }
        if !rule.spiffe_ids.is_empty() {
            let peer = req.peer_identity().and_then(|id| id.spiffe_id);
            match peer {
                Some(id) if rule.spiffe_ids.iter().any(|allowed| allowed.matches(&id)) => {}
                Some(id) => return Err(forbidden(format!("{id} is not allowed by {}", name()))),
                None => {
                    return Err(forbidden(format!(
                        "{} needs an mTLS client identity",
                        name()
                    )));
                }
            }
        }
        let has_jwt = credentials.jwt.is_some();
        let has_key = credentials.api_key.is_some();
        let missing = match rule.require {
            Require::None => false,
            Require::Jwt => !has_jwt,
            Require::ApiKey => !has_key,
            Require::Any => !has_jwt && !has_key,
        };
        if missing {
            return Err(Refusal {
                status: 401,
                reason: format!("{} requires credentials", name()),
                error: None,
            });
        }
        for (claim, wanted) in &rule.claims {
            let token = credentials.jwt.as_ref().map(|(_, token)| token);
            if !token.is_some_and(|t| claim_holds(t.claims.get(claim), wanted)) {
                return Err(forbidden(format!(
                    "{} requires claim {claim} = {wanted:?}",
                    name()
                )));
            }
        }
        Ok(())
    }

    /// Passes who the caller is on to the upstream.
    fn forward(&self, req: &mut Request, credentials: &Credentials<'_>) {
        if let Some((index, token)) = &credentials.jwt {
            let provider = &self.config.jwt[*index];
            for (claim, header) in &provider.forward_claims {
                if let Some(value) = token.claim_text(claim) {
                    let _ = req.set_header(header, &value);
                }
            }
            if !provider.forward_token {
                req.remove_header("authorization");
            }
        }
        if let (Some(name), Some(header)) = (
            &credentials.api_key,
            self.config
                .api_keys
                .as_ref()
                .and_then(|k| k.forward_as.as_ref()),
        ) {
            let _ = req.set_header(header, name);
        }
        if let Some(keys) = &self.config.api_keys
            && !keys.forward_key
        {
            req.remove_header(&keys.header);
        }
    }

    fn refuse(&self, refusal: Refusal) -> LocalResponse {
        let realm = self.config.realm.as_str();
        let mut response = LocalResponse::new(refusal.status)
            .header("content-type", "text/plain")
            .body(format!("{}\n", refusal.reason));
        if refusal.status == 401 {
            let challenge = match refusal.error {
                Some(error) => format!(
                    "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{}\"",
                    refusal.reason.replace('"', "'")
                ),
                None => format!("Bearer realm=\"{realm}\""),
            };
            response = response.header("www-authenticate", challenge);
        }
        response
    }
}

/// The token in `Authorization: Bearer <token>`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A claim equals `wanted`, or (for arrays, or space-separated `scope` strings) contains it.
fn claim_holds(claim: Option<&serde_json::Value>, wanted: &str) -> bool {
    match claim {
        Some(serde_json::Value::String(s)) => {
            s == wanted || s.split(' ').any(|part| part == wanted)
        }
        Some(serde_json::Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(wanted)),
        Some(other) => wanted
            .parse::<serde_json::Value>()
            .is_ok_and(|w| &w == other),
        None => false,
    }
}

switchyard_sdk::export_plugin!(Auth);

#[cfg(test)]
mod tests;
