//! Linkerd's retry budget: in any `ttl` window, retries may be at most
//! `min_retries_per_second * ttl + retry_ratio * requests`. Counts live in the plugin's shared
//! KV store, one entry per second that expires on its own, so every instance spends from the same
//! budget.

use serde::Deserialize;
use switchyard_sdk::config::DurationText;
use switchyard_sdk::{clock, shared};

/// `[plugin.config.budget]`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries allowed per original request, e.g. 0.2 = 20% extra load at most.
    #[serde(default = "default_ratio")]
    pub retry_ratio: f64,
    /// Retries allowed every second whatever the ratio, so low traffic can still retry.
    #[serde(default = "default_min")]
    pub min_retries_per_second: u32,
    /// The window requests and retries are counted over (whole seconds, 1s to 60s).
    #[serde(default = "default_ttl")]
    pub ttl: DurationText,
}

fn default_ratio() -> f64 {
    0.2
}

fn default_min() -> u32 {
    10
}

fn default_ttl() -> DurationText {
    DurationText(std::time::Duration::from_secs(10))
}

/// The budget shared by every instance of the plugin.
#[derive(Debug)]
pub struct Budget {
    config: BudgetConfig,
    window_secs: u64,
}

/// Counts of one second, as stored: requests then retries, little-endian u64s.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Second {
    requests: u64,
    retries: u64,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Result<Self, String> {
        if !(0.0..=1000.0).contains(&config.retry_ratio) {
            return Err(format!(
                "retry_ratio: {} is not a ratio between 0 and 1000",
                config.retry_ratio
            ));
        }
        let window_secs = config.ttl.0.as_secs();
        if !(1..=60).contains(&window_secs) {
            return Err(format!("ttl: {:?} is not between 1s and 60s", config.ttl.0));
        }
        Ok(Self {
            config,
            window_secs,
        })
    }

    /// Counts an original request (retries are counted when spent).
    pub fn record_request(&self) {
        update(now_secs(), |s| s.requests += 1);
    }

    /// Takes one retry from the budget if there is one left in the window.
    pub fn try_spend_retry(&self) -> bool {
        let now = now_secs();
        let window = (now.saturating_sub(self.window_secs - 1)..=now)
            .filter_map(|second| shared::kv_get(&key(second)))
            .filter_map(|entry| Second::decode(&entry.value))
            .fold(Second::default(), |sum, s| Second {
                requests: sum.requests + s.requests,
                retries: sum.retries + s.retries,
            });
        let allowed = f64::from(self.config.min_retries_per_second) * self.window_secs as f64
            + self.config.retry_ratio * window.requests as f64;
        if (window.retries as f64) >= allowed {
            return false;
        }
        update(now, |s| s.retries += 1);
        true
    }
}

fn update(second: u64, change: impl Fn(&mut Second)) {
    // Expire a little after the longest window so old seconds clean themselves up.
    let ttl = std::time::Duration::from_secs(62);
    let _ = shared::kv_update(&key(second), Some(ttl), |current| {
        let mut counts = current.and_then(Second::decode).unwrap_or_default();
        change(&mut counts);
        (counts.encode(), ())
    });
}

fn now_secs() -> u64 {
    clock::monotonic().as_secs()
}

fn key(second: u64) -> String {
    format!("budget/{second}")
}

impl Second {
    fn encode(self) -> Vec<u8> {
        let mut bytes = self.requests.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.retries.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (requests, retries) = bytes.split_at_checked(8)?;
        Some(Self {
            requests: u64::from_le_bytes(requests.try_into().ok()?),
            retries: u64::from_le_bytes(retries.try_into().ok()?),
        })
    }
}
