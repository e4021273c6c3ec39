//! What a controlled proxy knows of its control plane right now — reachable or not, since
//! when, the mesh generation last heard, the bundle in use or refused — and, with its identity,
//! the `control` section of the proxy's `/status`.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tracing::info;

use super::identity::{identity_span, spiffe_id};
use super::{Agent, lock};
use crate::mesh::render::IDENTITY_FILE;
use crate::operations::admin::StatusSection;
use crate::unix_time::{now as unix_now, secs as unix};

/// Whether the last call to the control plane was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Connection {
    /// Nothing answered yet since the proxy started.
    Connecting,
    Connected,
    Unreachable,
}

/// The agent's side of the link, updated at every call.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LinkState {
    pub(super) connection: Connection,
    /// When `connection` last changed (Unix seconds).
    pub(super) since_unix: u64,
    /// When the control plane last answered (Unix seconds).
    pub(super) last_contact_unix: Option<u64>,
    /// Why the last call failed, while unreachable.
    pub(super) last_error: Option<String>,
    /// The mesh generation the control plane last said it serves.
    pub(super) mesh_generation: Option<u64>,
    /// When the bundle in use was applied (Unix seconds).
    pub(super) applied_unix: Option<u64>,
    /// The newest bundle refused, and why, until a bundle is applied again.
    pub(super) refused: Option<Refused>,
}

/// A bundle this proxy would not run.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Refused {
    pub(super) etag: String,
    pub(super) error: String,
}

/// [`LinkState`] behind a lock, with the transitions the agent makes.
pub(super) struct Link(Mutex<LinkState>);

impl Default for Link {
    fn default() -> Self {
        Self(Mutex::new(LinkState {
            connection: Connection::Connecting,
            since_unix: unix_now(),
            last_contact_unix: None,
            last_error: None,
            mesh_generation: None,
            applied_unix: None,
            refused: None,
        }))
    }
}

impl Link {
    /// The control plane answered (with its mesh generation, when it said).
    pub(super) fn answered(&self, generation: Option<u64>) {
        let mut state = lock(&self.0);
        let now = unix_now();
        if state.connection == Connection::Unreachable {
            info!("control plane reachable again");
        }
        if state.connection != Connection::Connected {
            state.connection = Connection::Connected;
            state.since_unix = now;
        }
        state.last_contact_unix = Some(now);
        state.last_error = None;
        if generation.is_some() {
            state.mesh_generation = generation;
        }
    }

    /// A call failed; true if that is news (the control plane was not already unreachable).
    pub(super) fn failed(&self, error: String) -> bool {
        let mut state = lock(&self.0);
        let news = state.connection != Connection::Unreachable;
        if news {
            state.connection = Connection::Unreachable;
            state.since_unix = unix_now();
        }
        state.last_error = Some(error);
        news
    }

    pub(super) fn applied(&self) {
        let mut state = lock(&self.0);
        state.applied_unix = Some(unix_now());
        state.refused = None;
    }

    pub(super) fn refused(&self, etag: &str, error: &str) {
        lock(&self.0).refused = Some(Refused {
            etag: etag.to_owned(),
            error: error.to_owned(),
        });
    }

    pub(super) fn snapshot(&self) -> LinkState {
        lock(&self.0).clone()
    }
}

impl StatusSection for Agent {
    fn status(&self) -> serde_json::Value {
        let link = self.link.snapshot();
        let identity_file = self.path(IDENTITY_FILE);
        let identity = identity_span(&identity_file).map(|(_, renew_at, expires)| {
            let expires_in = expires
                .duration_since(SystemTime::now())
                .map_or(0, |d| d.as_secs());
            serde_json::json!({
                "spiffe_id": spiffe_id(&identity_file),
                "expires_unix": unix(expires),
                "expires_in_secs": expires_in,
                "renews_unix": unix(renew_at),
            })
        });
        serde_json::json!({
            "url": self.settings.url.to_string(),
            "workload": format!("{}/{}", self.settings.namespace, self.settings.workload),
            "instance": self.instance,
            "connection": link.connection,
            "since_unix": link.since_unix,
            "last_contact_unix": link.last_contact_unix,
            "last_error": link.last_error,
            "mesh_generation": link.mesh_generation,
            "bundle": {
                "etag": lock(&self.etag).clone(),
                "applied_unix": link.applied_unix,
                "refused": link.refused,
            },
            "identity": identity,
        })
    }
}
