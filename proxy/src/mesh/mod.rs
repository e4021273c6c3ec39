//! Running as a mesh: `switchyard control` holds the mesh's desired state (`mesh.toml`) and its
//! CA, and serves every proxy its config bundle and its identity over mTLS; a proxy whose config
//! has `[control]` is that control plane's agent.
//!
//! The pieces, read in order: [`api`] is the wire contract both sides share, [`settings`] reads
//! `mesh.toml`, [`render`] turns it into one bundle per workload, [`control`] serves them, and
//! [`agent`] fetches, verifies and applies them in a proxy through the same reload path a file
//! edit takes.

pub mod agent;
pub mod api;
mod client;
pub mod control;
pub mod discovery;
mod render;
pub mod settings;
pub mod weights;
