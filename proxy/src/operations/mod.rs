//! Operating a running proxy: the admin API and dashboard, reloading (from files, signals, the
//! API or the control plane) and watching the files a config was built from.

pub mod admin;
pub mod reload;
pub mod watch;
