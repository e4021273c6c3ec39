//! Upstreams: clusters, their endpoint sets (static or discovered by DNS), and a keep-alive
//! connection pool per endpoint.

mod cluster;
mod discovery;
mod endpoint;
mod pool;
mod stream;

pub use cluster::{Cluster, Clusters};
pub use endpoint::{Endpoint, InFlight};
pub use pool::UpstreamError;
