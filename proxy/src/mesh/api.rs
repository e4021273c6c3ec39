//! The control plane's HTTPS API as both sides see it: paths and JSON bodies.
//!
//! - `POST /v1/identity` with `Authorization: Bearer <bootstrap token>` and a PEM CSR: a
//!   short-lived certificate for the workload the token belongs to ([`IdentityGrant`]).
//! - `GET /v1/bundle?wait=SECONDS` over mTLS with that certificate: the workload's [`Bundle`];
//!   with `If-None-Match: <etag>` it waits up to `wait` for a change and answers 304 if none came.
//! - `GET /v1/plugins/<sha256>`: a plugin binary a bundle names.
//! - `POST /v1/report`: what the proxy applied ([`Report`]), sent after every bundle it applies
//!   or refuses and whenever it (re)connects, so a restarted control plane lists it at once.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a CSR is sent with a token, for an [`IdentityGrant`].
pub const IDENTITY_PATH: &str = "/v1/identity";
/// Where a workload's [`Bundle`] is fetched (and long-polled).
pub const BUNDLE_PATH: &str = "/v1/bundle";
/// Followed by a sha256: a plugin binary a bundle names.
pub const PLUGINS_PATH: &str = "/v1/plugins/";
/// Where a proxy says what it did with a bundle ([`Report`]).
pub const REPORT_PATH: &str = "/v1/report";

/// On bundle requests: which proxy of the workload is polling (the [`Report`]'s `instance`), so
/// the control plane knows it is still there between reports.
pub const INSTANCE_HEADER: &str = "x-switchyard-instance";
/// On bundle answers (200 and 304): the mesh generation the control plane serves.
pub const GENERATION_HEADER: &str = "x-switchyard-generation";

/// The longest a bundle request may wait for a change.
pub const MAX_WAIT_SECS: u64 = 60;

/// One workload's config: listeners, clusters and the mesh's plugins, pinned by sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bundle {
    /// `namespace/name`.
    pub workload: String,
    /// Changes exactly when the config or a plugin binary changes.
    pub etag: String,
    /// A proxy config (TOML) without `[admin]`, `[runtime]` or telemetry: those stay local.
    /// Plugin paths are `plugins/<sha256>.wasm`, relative to where the agent keeps its state.
    pub config: String,
    /// sha256 of `config`; an agent refuses a bundle whose config does not match it.
    pub config_sha256: String,
    pub plugins: Vec<PluginRef>,
}

/// A plugin binary a bundle needs, fetched from `/v1/plugins/<sha256>` and checked against it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginRef {
    pub name: String,
    pub sha256: String,
}

/// A signed workload certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityGrant {
    pub spiffe_id: String,
    /// The leaf, then the CA (PEM).
    pub certificate: String,
    /// The mesh CA (PEM): what peers' certificates are verified against.
    pub ca: String,
}

/// What a proxy did with the last bundle it was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Which proxy of the workload (host name and process id).
    #[serde(default)]
    pub instance: String,
    pub etag: String,
    /// The proxy's config version after applying it.
    pub version: u64,
    /// `"ok"`, or why it was refused.
    pub result: String,
}

/// Lowercase hex sha256, as plugins are pinned in config.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::hex(&Sha256::digest(bytes))
}
