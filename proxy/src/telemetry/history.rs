//! The proxy's own recent traffic, for the charts of its dashboard (`GET /history` on the admin
//! API): every `[admin] history_resolution` the traffic counters are read, and what was added
//! since the last reading goes into a window of [`SLOTS`] slots per listener and cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::traffic::{Reading, traffic};
use super::window::{Resolution, Sample, Series};

/// The charts both dashboards draw (the proxy's `/dashboard` and the control plane's
/// `/mesh/dashboard`), served as `/charts.js` by both admin APIs.
pub const CHARTS_JS: &str = include_str!("charts.js");

/// Slots kept: 15 minutes at the default 10 s.
pub const SLOTS: u64 = 90;

/// The window and the last reading it was taken against.
#[derive(Debug)]
pub struct History {
    resolution: Resolution,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Reading,
    /// Every listener's traffic together: what the proxy served.
    served: Series,
    listeners: BTreeMap<String, Series>,
    clusters: BTreeMap<String, Series>,
}

impl History {
    /// Starts reading the counters every `slot` (at least one second), for the life of the
    /// process.
    pub fn start(slot: Duration) -> Arc<Self> {
        let slot_secs = slot.as_secs().max(1);
        let resolution = Resolution {
            slot_secs,
            slots: SLOTS,
        };
        let history = Arc::new(Self {
            resolution,
            state: Mutex::new(State {
                last: traffic().read(),
                served: Series::new(resolution),
                listeners: BTreeMap::new(),
                clusters: BTreeMap::new(),
            }),
        });
        let sampler = Arc::clone(&history);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(slot_secs));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                sampler.sample();
            }
        });
        history
    }

    /// Adds what was counted since the last reading to the slot that just ended.
    fn sample(&self) {
        let now = crate::unix_time::now();
        let reading = traffic().read();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let delta = reading.since(&state.last);
        state.last = reading;
        let res = self.resolution;
        let slot = res.slot_of(now.saturating_sub(1));
        let oldest = self.resolution.oldest_kept(now);
        let mut served = Sample::default();
        for (name, sample) in &delta.listeners {
            served.add(sample);
            state
                .listeners
                .entry(name.clone())
                .or_insert_with(|| Series::new(res))
                .add(slot, sample);
        }
        state.served.add(slot, &served);
        for (name, sample) in &delta.clusters {
            state
                .clusters
                .entry(name.clone())
                .or_insert_with(|| Series::new(res))
                .add(slot, sample);
        }
        state.served.prune(oldest);
        state.listeners.retain(|_, s| !s.prune(oldest));
        state.clusters.retain(|_, s| !s.prune(oldest));
    }

    /// The window as the dashboard draws it: a point per slot for the proxy as a whole, and
    /// for each listener and cluster with traffic in the window, with the window's summary.
    pub fn json(&self) -> Value {
        let now = crate::unix_time::now();
        let res = self.resolution;
        let (from, to) = (res.oldest_kept(now), res.slot_of(now.saturating_sub(1)));
        let seconds = ((to + 1 - from) * res.slot_secs) as f64;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let view = |series: &Series| {
            json!({
                "summary": series.total(from).summary(seconds),
                "points": series.points(from, to, res.slot_secs),
            })
        };
        let named = |all: &BTreeMap<String, Series>| {
            all.iter()
                .map(|(name, s)| (name.clone(), view(s)))
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "slot_secs": res.slot_secs,
            "window_secs": res.window_secs(),
            "served": view(&state.served),
            "listeners": named(&state.listeners),
            "clusters": named(&state.clusters),
        })
    }
}
