//! Request routing, as an Istio VirtualService's `http` routes or a Gateway API HTTPRoute: match
//! on host, path, method, headers and query; first match wins; send to a cluster with optional
//! path and host rewrites and header changes, or answer with a redirect or a direct response.
//! See README.md.

mod headers;

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_sdk::matching::RequestMatch;
use switchyard_sdk::metrics::Counter;
use switchyard_sdk::{Action, LocalResponse, Plugin, Request, Response, log};

use headers::HeaderChanges;

/// Request-context key holding the index of the route the request took.
const ROUTE_KEY: &str = "routing.route";

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Checked in order; the first whose `match` holds applies. A request no route matches goes
    /// to the listener's default cluster, or gets 404 with `not_found = true`.
    pub routes: Vec<Route>,
    /// Answer 404 when no route matches instead of using the listener's default cluster.
    #[serde(default)]
    pub not_found: bool,
}

/// `[[plugin.config.routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The `route` label of this plugin's metrics.
    pub name: String,
    #[serde(default, rename = "match")]
    pub matches: RequestMatch,
    /// Where matched requests go; absent: the listener's default cluster.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub request_headers: HeaderChanges,
    #[serde(default)]
    pub response_headers: HeaderChanges,
    /// Answer with a redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Answer with this response instead of forwarding.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
}

/// `rewrite = { path_prefix = "/", host = "backend.internal" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the part of the path the route's `match.path_prefix` (or `match.path`) matched.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The `Host` (`:authority`) the upstream sees.
    #[serde(default)]
    pub host: Option<String>,
}

/// `redirect = { scheme = "https", host = "new.example.com", path = "/new", status = 301 }`; the
/// parts not given are kept from the request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Replaces the whole path (the query is kept).
    #[serde(default)]
    pub path: Option<String>,
    /// Replaces the matched `path_prefix`, keeping the rest of the path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    301
}

/// `direct_response = { status = 200, body = "ok\n", headers = { "content-type" = "text/plain" } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Routes requests by the first matching rule.
pub struct Routing {
    routes: Vec<Route>,
    not_found: bool,
    /// The `requests` metric of each route, by index, and of requests no route matched.
    routed: Vec<Counter>,
    unrouted: Counter,
}

impl Plugin for Routing {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        for (i, route) in config.routes.iter().enumerate() {
            route.validate(&format!("routes[{i}]"))?;
        }
        let requests = |route: &str| Counter::new("requests", &[("route", route)]);
        Ok(Self {
            routed: config.routes.iter().map(|r| requests(&r.name)).collect(),
            unrouted: requests("none"),
            routes: config.routes,
            not_found: config.not_found,
        })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        let Some((index, route)) = self
            .routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.matches.matches(req))
        else {
            if self.not_found {
                self.unrouted.add(1);
                return Action::respond(404, "no route for this request\n");
            }
            return Action::Continue;
        };
        self.routed[index].add(1);
        if let Some(redirect) = &route.redirect {
            return Action::Respond(redirect.response(req, &route.matches));
        }
        if let Some(direct) = &route.direct_response {
            let mut response = LocalResponse::new(direct.status).body(direct.body.as_bytes());
            for (name, value) in &direct.headers {
                response = response.header(name, value);
            }
            return Action::Respond(response);
        }
        if let Some(cluster) = &route.cluster
            && let Err(e) = req.set_destination(cluster)
        {
            log::warn(&format!("routing: route {:?}: {e}", route.name));
        }
        if let Some(rewrite) = &route.rewrite {
            rewrite.apply(req, &route.matches);
        }
        route.request_headers.apply_to_request(req);
        req.set_route(&route.name);
        if !route.response_headers.is_empty() {
            req.context_set(
                ROUTE_KEY,
                &u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes(),
            );
        }
        Action::Continue
    }

    fn on_response(&self, req: &mut Request, resp: &mut Response) -> Action {
        // Without response header changes in any route this hook has nothing to do: the proxy
        // stops calling it.
        if self.routes.iter().all(|r| r.response_headers.is_empty()) {
            return Action::unused();
        }
        if let Some(route) = req
            .context_get(ROUTE_KEY)
            .and_then(|bytes| Some(u32::from_le_bytes(bytes.try_into().ok()?)))
            .and_then(|index| self.routes.get(usize::try_from(index).ok()?))
        {
            route.response_headers.apply_to_response(resp);
        }
        Action::Continue
    }
}

impl Route {
    fn validate(&self, at: &str) -> Result<(), String> {
        self.matches.validate(&format!("{at}.match"))?;
        let answers = [
            self.cluster.is_some() || self.rewrite.is_some(),
            self.redirect.is_some(),
            self.direct_response.is_some(),
        ];
        if answers.iter().filter(|a| **a).count() > 1 {
            return Err(format!(
                "{at}: give one of cluster (with rewrite), redirect or direct_response"
            ));
        }
        if let Some(cluster) = &self.cluster
            && cluster.trim().is_empty()
        {
            return Err(format!("{at}.cluster: must not be empty"));
        }
        let prefix_matched = self.matches.path_prefix.is_some() || self.matches.path.is_some();
        if let Some(rewrite) = &self.rewrite {
            if let Some(prefix) = &rewrite.path_prefix {
                if !prefix_matched {
                    return Err(format!(
                        "{at}.rewrite.path_prefix: needs match.path_prefix or match.path to say what it replaces"
                    ));
                }
                if !prefix.starts_with('/') {
                    return Err(format!("{at}.rewrite.path_prefix: must start with '/'"));
                }
            }
            if rewrite.host.as_deref().is_some_and(|h| h.trim().is_empty()) {
                return Err(format!("{at}.rewrite.host: must not be empty"));
            }
        }
        if let Some(redirect) = &self.redirect {
            if !matches!(redirect.status, 301 | 302 | 303 | 307 | 308) {
                return Err(format!(
                    "{at}.redirect.status: {} is not a redirect (301, 302, 303, 307, 308)",
                    redirect.status
                ));
            }
            if redirect.path.is_some() && redirect.path_prefix.is_some() {
                return Err(format!("{at}.redirect: give path or path_prefix, not both"));
            }
            if redirect.path_prefix.is_some() && !prefix_matched {
                return Err(format!(
                    "{at}.redirect.path_prefix: needs match.path_prefix or match.path"
                ));
            }
        }
        if let Some(direct) = &self.direct_response
            && !(200..=599).contains(&direct.status)
        {
            return Err(format!(
                "{at}.direct_response.status: {} is not an HTTP status from 200 to 599",
                direct.status
            ));
        }
        self.request_headers
            .validate(&format!("{at}.request_headers"))?;
        self.response_headers
            .validate(&format!("{at}.response_headers"))
    }
}

/// `path` with the part `matched` matched replaced by `replacement`: `/v2/users` with prefix
/// `/v2/` and replacement `/` is `/users`; the query is kept.
fn replace_prefix(full_path: &str, matched: &RequestMatch, replacement: &str) -> String {
    let (path, query) = match full_path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (full_path, None),
    };
    let matched_len = matched
        .path_prefix
        .as_deref()
        .or(matched.path.as_deref())
        .filter(|p| path.starts_with(*p))
        .map_or(0, str::len);
    let rest = &path[matched_len..];
    let mut new_path = if replacement.ends_with('/') && rest.starts_with('/') {
        format!("{replacement}{}", &rest[1..])
    } else {
        format!("{replacement}{rest}")
    };
    if !new_path.starts_with('/') {
        new_path.insert(0, '/');
    }
    match query {
        Some(query) => format!("{new_path}?{query}"),
        None => new_path,
    }
}

impl Rewrite {
    fn apply(&self, req: &mut Request, matched: &RequestMatch) {
        if let Some(prefix) = &self.path_prefix {
            let new_path = replace_prefix(&req.path(), matched, prefix);
            if let Err(e) = req.set_path(&new_path) {
                log::warn(&format!("routing: cannot rewrite the path: {e}"));
            }
        }
        if let Some(host) = &self.host
            && let Err(e) = req.set_authority(host)
        {
            log::warn(&format!("routing: cannot rewrite the host: {e}"));
        }
    }
}

impl Redirect {
    fn response(&self, req: &Request, matched: &RequestMatch) -> LocalResponse {
        let scheme = self
            .scheme
            .as_deref()
            .unwrap_or(match req.header("x-forwarded-proto") {
                Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
                _ => "http",
            });
        let authority = req.authority().unwrap_or_default();
        let host = self
            .host
            .clone()
            .unwrap_or_else(|| switchyard_sdk::config::host_without_port(&authority).to_owned());
        let port = match (self.port, self.host.is_some() || self.scheme.is_some()) {
            (Some(port), _) => format!(":{port}"),
            // Keep the request's port only when neither host nor scheme changed.
            (None, false) => authority
                .strip_prefix(switchyard_sdk::config::host_without_port(&authority))
                .unwrap_or_default()
                .to_owned(),
            (None, true) => String::new(),
        };
        let full_path = req.path();
        let path = if let Some(path) = &self.path {
            match full_path.split_once('?') {
                Some((_, query)) => format!("{path}?{query}"),
                None => path.clone(),
            }
        } else if let Some(prefix) = &self.path_prefix {
            replace_prefix(&full_path, matched, prefix)
        } else {
            full_path
        };
        LocalResponse::new(self.status)
            .header("location", format!("{scheme}://{host}{port}{path}"))
            .header("content-type", "text/plain")
            .body("redirecting\n")
    }
}

switchyard_sdk::export_plugin!(Routing);

#[cfg(test)]
mod tests;
