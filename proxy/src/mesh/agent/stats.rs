//! A controlled proxy's traffic, sent to its control plane every `[control] stats_interval` for
//! the mesh view: what each listener served and what went to each cluster since the last report
//! that got through, and the busiest paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::Agent;
use crate::mesh::api::{self, ClusterStats, ListenerStats, StatsReport};
use crate::mesh::client::CallError;
use crate::operations::reload::Reloader;
use crate::telemetry::traffic::{Reading, traffic};

impl Agent {
    /// Reports the traffic every interval, for the life of the process. A report that does not
    /// get through is folded into the next one.
    pub(super) async fn report_stats(self: Arc<Self>, reloader: Arc<Reloader>) {
        traffic().count_paths();
        let mut last = traffic().read();
        let mut since = Instant::now();
        let mut ticks = tokio::time::interval(self.settings.stats_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut failing = false;
        loop {
            ticks.tick().await;
            let reading = traffic().read();
            let report = self.stats_report(&reloader, &reading.since(&last), since.elapsed());
            match self.send_stats(&report).await {
                Ok(()) => {
                    last = reading;
                    since = Instant::now();
                    failing = false;
                }
                // Said once: the control plane being away is already logged by the poll.
                Err(e) if !failing => {
                    warn!(error = %e, "cannot report traffic; it goes in the next report");
                    failing = true;
                }
                Err(e) => debug!(error = %e, "cannot report traffic"),
            }
        }
    }

    fn stats_report(&self, reloader: &Reloader, delta: &Reading, took: Duration) -> StatsReport {
        let config = &reloader.current().config;
        let listeners = delta
            .listeners
            .iter()
            .filter(|(name, _)| config.listeners.iter().any(|l| &l.name == *name))
            .map(|(name, sample)| ListenerStats {
                name: name.clone(),
                sample: sample.clone(),
            })
            .collect();
        let clusters = delta
            .clusters
            .iter()
            .map(|(name, sample)| {
                let tls = config
                    .clusters
                    .iter()
                    .find(|c| &c.name == name)
                    .and_then(|c| c.tls.as_ref());
                ClusterStats {
                    name: name.clone(),
                    peer_spiffe_id: tls.and_then(|t| t.spiffe_id.clone()),
                    mtls: tls.is_some_and(|t| t.cert.is_some()),
                    sample: sample.clone(),
                }
            })
            .filter(|c| c.sample.requests > 0)
            .collect();
        StatsReport {
            instance: self.instance.clone(),
            interval_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            listeners,
            clusters,
            paths: traffic().take_paths(),
        }
    }

    async fn send_stats(&self, report: &StatsReport) -> Result<(), CallError> {
        self.post_json(api::STATS_PATH, "stats", report).await
    }
}
