//! Ticks: a plugin's `on-tick` at the interval it asked for in `init` (`timer.tick-every`),
//! once per proxy whatever its worker threads, on one pooled instance at a time and under the
//! same CPU deadline as a hook. A tick that fails is logged and counted like a failed hook; the
//! next one comes on time. Ticking stops when the plugin is replaced (reload, swap) and its last
//! request is done with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::bindings::Decision;
use super::{Hook, Plugin};
use crate::upstream::Clusters;

/// A plugin's schedule.
pub struct Ticker {
    every: Duration,
    started: AtomicBool,
    /// What its callouts reach: the clusters of the config now applied.
    clusters: ArcSwapOption<Clusters>,
}

impl Ticker {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            started: AtomicBool::new(false),
            clusters: ArcSwapOption::empty(),
        }
    }
}

impl Plugin {
    /// Ticks this plugin from now on if it asked for ticks (once, however often this is called),
    /// with `clusters` reachable by the callouts it makes in `on-tick`.
    pub fn start_ticking(self: &Arc<Self>, clusters: &Arc<Clusters>) {
        let Some(ticker) = &self.ticker else {
            return;
        };
        ticker.clusters.store(Some(Arc::clone(clusters)));
        if !ticker.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(tick_forever(Arc::downgrade(self), ticker.every));
        }
    }

    async fn tick(&self) {
        let Some(clusters) = self.ticker.as_ref().and_then(|t| t.clusters.load_full()) else {
            return;
        };
        let result = match &self.runner {
            super::Runner::Instances(pool) => pool.tick(clusters).await,
            super::Runner::ProxyWasm(filter) => filter.tick(clusters).await,
        };
        self.count(Hook::Tick, None, result.as_ref().err());
        match result {
            Ok(Decision::Unimplemented) => {
                tracing::warn!(plugin = %self.name, "the plugin asked for ticks but has no on_tick; ticks stop");
                if let Some(ticker) = &self.ticker {
                    ticker.clusters.store(None);
                }
            }
            Ok(_) => {}
            Err(error) => self.failures.record(&self.name, Hook::Tick, &error, None),
        }
    }
}

async fn tick_forever(plugin: Weak<Plugin>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    // A tick that ran long delays the next one; ticks are never bunched up to catch up.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first completes at once; the first tick is one interval in
    loop {
        interval.tick().await;
        let Some(plugin) = plugin.upgrade() else {
            return;
        };
        plugin.tick().await;
    }
}
