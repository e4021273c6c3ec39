//! The control plane's HTTPS API as both sides see it: paths and JSON bodies.
//!
//! - `POST /v1/identity` with `Authorization: Bearer <bootstrap token>` and a PEM CSR: a
//!   short-lived certificate for the workload the token belongs to ([`IdentityGrant`]).
//! - `GET /v1/bundle?wait=SECONDS` over mTLS with that certificate: the workload's [`Bundle`];
//!   with `If-None-Match: <etag>` it waits up to `wait` for a change and answers 304 if none came.
//! - `GET /v1/plugins/<sha256>`: a plugin binary a bundle names.
//! - `POST /v1/report`: what the proxy applied ([`Report`]), sent after every bundle it applies
//!   or refuses and whenever it (re)connects, so a restarted control plane lists it at once.
//! - `POST /v1/stats`: the traffic a proxy handled since its last [`StatsReport`], every
//!   `[control] stats_interval`, for the mesh view (`ctl stat`, `edges`, `top`, the dashboard).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::telemetry::traffic::PathCount;
use crate::telemetry::window::Sample;

/// Where a CSR is sent with a token, for an [`IdentityGrant`].
pub const IDENTITY_PATH: &str = "/v1/identity";
/// Where a workload's [`Bundle`] is fetched (and long-polled).
pub const BUNDLE_PATH: &str = "/v1/bundle";
/// Followed by a sha256: a plugin binary a bundle names.
pub const PLUGINS_PATH: &str = "/v1/plugins/";
/// Where a proxy says what it did with a bundle ([`Report`]).
pub const REPORT_PATH: &str = "/v1/report";
/// Where a proxy sends its traffic ([`StatsReport`]).
pub const STATS_PATH: &str = "/v1/stats";

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

/// The traffic one proxy handled since its last report: deltas, not totals, so reports from
/// many proxies of a workload add up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsReport {
    /// Which proxy of the workload (as in [`Report`]).
    pub instance: String,
    /// How long the report covers, in milliseconds.
    pub interval_ms: u64,
    /// What each listener served.
    pub listeners: Vec<ListenerStats>,
    /// What was sent to each cluster.
    pub clusters: Vec<ClusterStats>,
    /// The busiest request paths, busiest first.
    #[serde(default)]
    pub paths: Vec<PathCount>,
}

/// One listener's traffic in a [`StatsReport`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListenerStats {
    pub name: String,
    pub sample: Sample,
}

/// One cluster's traffic in a [`StatsReport`], with the identity its peers must have.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStats {
    pub name: String,
    /// The SPIFFE ID the cluster's endpoints must present (a mesh workload), if any.
    pub peer_spiffe_id: Option<String>,
    /// Whether requests to it go over mTLS (this proxy presents a certificate).
    pub mtls: bool,
    pub sample: Sample,
}

/// Lowercase hex sha256, as plugins are pinned in config.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_report_reads_back_as_sent() {
        let mut sample = Sample {
            requests: 3,
            failures: 1,
            mtls: 3,
            latency: vec![0, 3],
            ..Sample::default()
        };
        sample.grpc.insert(14, 1);
        let report = StatsReport {
            instance: "web-1:7".into(),
            interval_ms: 1000,
            listeners: vec![ListenerStats {
                name: "inbound".into(),
                sample: sample.clone(),
            }],
            clusters: vec![ClusterStats {
                name: "b".into(),
                peer_spiffe_id: Some("spiffe://cluster.local/ns/default/sa/b".into()),
                mtls: true,
                sample: sample.clone(),
            }],
            paths: vec![PathCount {
                listener: "inbound".into(),
                method: "GET".into(),
                path: "/x".into(),
                sample: sample.clone(),
            }],
        };
        let json = serde_json::to_vec(&report).unwrap();
        let back: StatsReport = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.clusters[0].sample, sample);
        assert_eq!(back.paths[0].sample, sample);
        assert_eq!(back.listeners[0].sample.grpc.get(&14), Some(&1));
    }
}
