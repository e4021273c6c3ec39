//! Why an attempt has no response, and every place that reason shows, in one place: the kind
//! counted in metrics and written in the access log, what a plugin's `on_upstream_response`
//! sees, what the client gets, and what the endpoint's health hears.

use std::time::Duration;

use crate::local_response::LocalError;
use crate::plugin::{AttemptOutcome, UpstreamError};
use crate::telemetry::ErrorKind;
use crate::upstream::{Cluster, Observed, UpstreamError as SendError};

use super::answers::{Answer, downstream_body_error, error_answer, overloaded};

/// Why an attempt has no response.
pub(super) enum AttemptError {
    NoEndpoint,
    /// A circuit breaker of the cluster is open.
    Overloaded(&'static str),
    Send(SendError),
    Timeout,
    NotReplayable,
    BadRequest(String),
}

impl AttemptError {
    /// What sending gave back, as the reason an attempt failed.
    pub(super) fn from_send(error: SendError) -> Self {
        match error {
            SendError::Overloaded { limit } => Self::Overloaded(limit),
            SendError::TimedOut { .. } => Self::Timeout,
            error => Self::Send(error),
        }
    }

    /// The kind counted in metrics and the access log; `None` for a request the proxy could
    /// not forward at all (not the upstream's doing).
    pub(super) fn kind(&self) -> Option<ErrorKind> {
        Some(match self {
            Self::NoEndpoint => ErrorKind::NoEndpoint,
            Self::Overloaded(_) => ErrorKind::Overloaded,
            Self::Send(SendError::Tls { .. }) => ErrorKind::Tls,
            Self::Send(e) if e.is_connect() => ErrorKind::Connect,
            Self::Send(_) | Self::NotReplayable => ErrorKind::Reset,
            Self::Timeout => ErrorKind::Timeout,
            Self::BadRequest(_) => return None,
        })
    }

    /// What `on_upstream_response` sees.
    pub(super) fn outcome(&self) -> AttemptOutcome {
        AttemptOutcome::Error(match self {
            Self::Timeout => UpstreamError::PerTryTimeout,
            Self::Send(e) if e.is_connect() => UpstreamError::ConnectFailure,
            _ => UpstreamError::Reset,
        })
    }

    /// What the endpoint's outlier detection hears, for failures the endpoint caused.
    pub(super) fn observed(&self) -> Option<Observed> {
        match self {
            Self::Send(e) if e.is_connect() => Some(Observed::ConnectFailure),
            Self::Send(_) => Some(Observed::Other),
            _ => None,
        }
    }

    /// What the client gets when this is the last attempt.
    pub(super) fn answer(self, cluster: &Cluster, per_try: Duration) -> Answer {
        let name = cluster.name();
        match self {
            Self::Overloaded(limit) => overloaded(cluster, limit),
            Self::Send(e) if let Some(answer) = downstream_body_error(&e) => answer,
            Self::NoEndpoint => error_answer(
                LocalError::NoEndpoint,
                &format!("cluster {name:?} has no endpoint to send to"),
            ),
            Self::Send(e) if e.is_connect() => error_answer(
                LocalError::ConnectFailure,
                &format!("cluster {name:?}: {e}"),
            ),
            Self::Send(e) => {
                error_answer(LocalError::UpstreamReset, &format!("cluster {name:?}: {e}"))
            }
            Self::Timeout => error_answer(
                LocalError::UpstreamTimeout,
                &format!("cluster {name:?} did not answer within {per_try:?}"),
            ),
            Self::NotReplayable => error_answer(
                LocalError::UpstreamReset,
                &format!(
                    "cluster {name:?}: the request body was already sent and cannot be retried"
                ),
            ),
            Self::BadRequest(e) => error_answer(
                LocalError::BadRequest,
                &format!("cannot forward this request: {e}"),
            ),
        }
    }
}
