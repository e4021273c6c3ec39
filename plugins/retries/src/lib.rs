//! Retries and timeouts per route, as a Linkerd ServiceProfile or an Istio VirtualService
//! `retries` block describes them, with Linkerd's retry budget so a failing upstream is not
//! hammered. See README.md.

mod budget;

use std::time::Duration;

use serde::Deserialize;
use switchyard_sdk::config::DurationText;
use switchyard_sdk::matching::RequestMatch;
use switchyard_sdk::{
    Action, Outcome, Plugin, Request, UpstreamError, attempts, grpc, metrics, random,
};

use budget::{Budget, BudgetConfig};

/// The header that tells the upstream which try this is (1 for the first).
pub const ATTEMPT_HEADER: &str = "x-switchyard-attempt";

/// Request-context key holding the index of the route the request matched.
const ROUTE_KEY: &str = "retries.route";

/// `[plugin.config]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Checked in order; the first whose condition holds applies. Unmatched requests are not
    /// retried and keep the cluster's timeout.
    pub routes: Vec<Route>,
    /// Caps retries to a share of requests across all routes.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
}

/// `[[plugin.config.routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Used as the `route` label of this plugin's metrics.
    pub name: String,
    #[serde(default)]
    pub condition: RequestMatch,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    /// Bounds the whole request, retries and backoff included; past it the client gets 504.
    #[serde(default)]
    pub timeout: Option<DurationText>,
}

/// `retries = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first try: 3 means at most 4 tries.
    pub attempts: u32,
    /// Bounds each try.
    #[serde(default)]
    pub per_try_timeout: Option<DurationText>,
    /// Which failures are retried.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Statuses retried with `retry_on = ["retriable-status-codes"]`.
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    /// Exponential backoff between tries, with full jitter.
    #[serde(default)]
    pub backoff: Backoff,
    /// Retry POST, PATCH and other non-idempotent methods too (off: only GET, HEAD, OPTIONS,
    /// TRACE, PUT and DELETE are retried).
    #[serde(default)]
    pub retry_non_idempotent: bool,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Status5xx, RetryOn::ConnectFailure, RetryOn::Reset]
}

/// A class of failure worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RetryOn {
    /// Any 5xx answer, or no answer within the per-try timeout.
    #[serde(rename = "5xx")]
    Status5xx,
    /// 502, 503 or 504, or no answer within the per-try timeout.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The connection could not be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The connection broke before a response.
    #[serde(rename = "reset")]
    Reset,
    /// No answer within the per-try timeout.
    #[serde(rename = "per-try-timeout")]
    PerTryTimeout,
    /// One of `retriable_status_codes`.
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    /// gRPC `CANCELLED` (1) in a trailers-only response, as Envoy's `cancelled`.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// gRPC `DEADLINE_EXCEEDED` (4).
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// gRPC `INTERNAL` (13).
    #[serde(rename = "internal")]
    Internal,
    /// gRPC `RESOURCE_EXHAUSTED` (8).
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    /// gRPC `UNAVAILABLE` (14).
    #[serde(rename = "unavailable")]
    Unavailable,
}

impl RetryOn {
    /// The gRPC status this class retries, for the gRPC names.
    fn grpc_status(self) -> Option<u32> {
        match self {
            Self::Cancelled => Some(grpc::CANCELLED),
            Self::DeadlineExceeded => Some(grpc::DEADLINE_EXCEEDED),
            Self::Internal => Some(grpc::INTERNAL),
            Self::ResourceExhausted => Some(grpc::RESOURCE_EXHAUSTED),
            Self::Unavailable => Some(grpc::UNAVAILABLE),
            _ => None,
        }
    }
}

/// `backoff = { base = "25ms", max = "250ms" }`: before retry n the wait is random in
/// `[0, min(max, base * 2^(n-1))]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_base")]
    pub base: DurationText,
    #[serde(default = "default_max")]
    pub max: DurationText,
}

fn default_base() -> DurationText {
    DurationText(Duration::from_millis(25))
}

fn default_max() -> DurationText {
    DurationText(Duration::from_millis(250))
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: default_base(),
            max: default_max(),
        }
    }
}

/// Sets per-route timeouts and asks the proxy to retry failed tries.
pub struct Retries {
    routes: Vec<Route>,
    budget: Option<Budget>,
}

impl Plugin for Retries {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        for (i, route) in config.routes.iter().enumerate() {
            route
                .condition
                .validate(&format!("routes[{i}].condition"))?;
            if let Some(policy) = &route.retries {
                policy.validate(&format!("routes[{i}].retries"))?;
            }
        }
        let budget = config
            .budget
            .map(|b| Budget::new(b).map_err(|e| format!("budget.{e}")))
            .transpose()?;
        // Successes never lead to a retry: the proxy need not call on_upstream_response for
        // them (one hook call fewer on nearly every request).
        let policies = || config.routes.iter().filter_map(|r| r.retries.as_ref());
        let min_status = policies()
            .filter_map(RetryPolicy::lowest_retried_status)
            .min()
            .unwrap_or(u16::MAX);
        let grpc_statuses =
            policies().any(|p| p.retry_on.iter().any(|c| c.grpc_status().is_some()));
        attempts::upstream_failures_only(min_status, grpc_statuses);
        Ok(Self {
            routes: config.routes,
            budget,
        })
    }

    fn on_request(&self, req: &mut Request) -> Action {
        let Some((index, route)) = self
            .routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.condition.matches(req))
        else {
            return Action::Continue;
        };
        if let Some(DurationText(timeout)) = route.timeout {
            req.set_timeout(timeout);
        }
        let Some(policy) = &route.retries else {
            return Action::Continue;
        };
        if let Some(DurationText(per_try)) = policy.per_try_timeout {
            req.set_per_try_timeout(per_try);
        }
        req.context_set(
            ROUTE_KEY,
            &u32::try_from(index).unwrap_or(u32::MAX).to_le_bytes(),
        );
        let _ = req.set_header(ATTEMPT_HEADER, "1");
        if let Some(budget) = &self.budget {
            budget.record_request();
        }
        Action::Continue
    }

    fn on_upstream_response(&self, req: &mut Request, outcome: Outcome) -> Action {
        let Some(route) = req
            .context_get(ROUTE_KEY)
            .and_then(|bytes| Some(u32::from_le_bytes(bytes.try_into().ok()?)))
            .and_then(|index| self.routes.get(usize::try_from(index).ok()?))
        else {
            return Action::Continue;
        };
        let Some(policy) = &route.retries else {
            return Action::Continue;
        };
        let tried = req.attempt();
        if tried > policy.attempts {
            return Action::Continue;
        }
        // Only policies naming gRPC statuses pay for reading the head.
        let grpc_status = match outcome {
            Outcome::Response(_) if policy.retry_on.iter().any(|c| c.grpc_status().is_some()) => {
                req.attempt_response().grpc_status()
            }
            _ => None,
        };
        if !policy.retries(outcome, grpc_status) {
            return Action::Continue;
        }
        // gRPC sends every call as POST: its retry classes, not the method, decide.
        if !policy.retry_non_idempotent && !is_idempotent(&req.method()) && !is_grpc(req) {
            return Action::Continue;
        }
        if let Some(budget) = &self.budget
            && !budget.try_spend_retry()
        {
            metrics::counter("budget_exhausted", &[("route", &route.name)], 1);
            return Action::Continue;
        }
        metrics::counter("retries", &[("route", &route.name)], 1);
        let _ = req.set_header(ATTEMPT_HEADER, &(tried + 1).to_string());
        Action::Retry {
            delay: policy.backoff.before_retry(tried),
        }
    }
}

impl RetryPolicy {
    /// The lowest response status [`RetryPolicy::retries`] retries, if any: read off that
    /// function itself, so the two cannot disagree.
    fn lowest_retried_status(&self) -> Option<u16> {
        (100..=999).find(|&status| self.retries(Outcome::Response(status), None))
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        if self.attempts > 20 {
            return Err(format!(
                "{at}.attempts: at most 20 retries, not {}",
                self.attempts
            ));
        }
        if self.retry_on.contains(&RetryOn::RetriableStatusCodes)
            && self.retriable_status_codes.is_empty()
        {
            return Err(format!(
                "{at}.retriable_status_codes: \"retriable-status-codes\" is in retry_on, so list the codes"
            ));
        }
        if let Some(bad) = self
            .retriable_status_codes
            .iter()
            .find(|c| !(100..=599).contains(*c))
        {
            return Err(format!(
                "{at}.retriable_status_codes: {bad} is not an HTTP status"
            ));
        }
        if self.backoff.base.0 > self.backoff.max.0 {
            return Err(format!("{at}.backoff: base is longer than max"));
        }
        Ok(())
    }

    /// Whether this outcome (with the gRPC status of a trailers-only response, if any) is a
    /// failure the policy retries.
    fn retries(&self, outcome: Outcome, grpc_status: Option<u32>) -> bool {
        self.retry_on.iter().any(|class| match (class, outcome) {
            (class, Outcome::Response(_)) if class.grpc_status().is_some() => {
                grpc_status.is_some() && class.grpc_status() == grpc_status
            }
            (RetryOn::Status5xx, Outcome::Response(s)) => (500..=599).contains(&s),
            (RetryOn::GatewayError, Outcome::Response(s)) => matches!(s, 502..=504),
            (RetryOn::RetriableStatusCodes, Outcome::Response(s)) => {
                self.retriable_status_codes.contains(&s)
            }
            (
                RetryOn::Status5xx | RetryOn::GatewayError | RetryOn::PerTryTimeout,
                Outcome::Error(UpstreamError::PerTryTimeout),
            ) => true,
            (RetryOn::ConnectFailure, Outcome::Error(UpstreamError::ConnectFailure)) => true,
            (RetryOn::Reset, Outcome::Error(UpstreamError::Reset)) => true,
            _ => false,
        })
    }
}

impl Backoff {
    /// The wait before the retry that follows try number `tried` (1-based).
    fn before_retry(&self, tried: u32) -> Duration {
        let doubling = 2u32.saturating_pow(tried.saturating_sub(1).min(20));
        let ceiling = self.base.0.saturating_mul(doubling).min(self.max.0);
        ceiling.mul_f64(random::unit())
    }
}

/// A gRPC call (not gRPC-Web, which the listener has turned into gRPC by now anyway).
fn is_grpc(req: &Request) -> bool {
    req.header("content-type")
        .is_some_and(|ct| grpc::is_grpc_content_type(&ct))
}

/// RFC 9110 §9.2.2: safe to send twice.
fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

switchyard_sdk::export_plugin!(Retries);

#[cfg(test)]
mod tests;
