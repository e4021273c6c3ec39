//! Wall-clock times as whole seconds since the Unix epoch: how the admin APIs, reports and
//! `ctl` show when something happened.

use std::time::SystemTime;

/// `t` in seconds since the Unix epoch (0 for a time before it).
pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> u64 {
    secs(SystemTime::now())
}
