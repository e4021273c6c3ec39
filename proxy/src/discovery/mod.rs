//! Where a cluster's endpoints come from: addresses and DNS names in the config (`dns`), and
//! Kubernetes EndpointSlices (`kubernetes`, also used by the control plane for workloads and to
//! review service-account tokens).

pub mod dns;
pub mod kubernetes;

pub use dns::Resolved;
