//! Upstreams: clusters, their endpoint sets (static or discovered by DNS), and a keep-alive
//! connection pool per endpoint.

mod cluster;
mod clusters;
mod endpoint;
pub mod gauges;
mod grpc_health;
mod health;
mod limits;
mod pool;
mod stream;

pub use cluster::{Cluster, EndpointState};
pub use clusters::{ClusterStartError, Clusters};
pub use endpoint::{Endpoint, InFlight};
pub use health::Observed;
pub use limits::{Admission, ClusterLimits};
pub use pool::{ExchangeError, Http1Upgraded, Pace, UpstreamBody, UpstreamError};
pub use stream::UpstreamStream;
pub use switchyard_http1::client::ResponseFields;
