//! Switchyard's own HTTP/1.1 engine, on the upstream side: requests written with one vectored
//! write by the task that owns them, responses parsed with `httparse` straight off the
//! connection's buffer and streamed back by the body that owns the connection. hyper still
//! serves clients (HTTP/1.1 and HTTP/2) and speaks HTTP/2 to upstreams.
//!
//! A crate of its own so that it is built and tested without the proxy (the fuzz targets in
//! `fuzz/` use it too).
#![forbid(unsafe_code)]

pub mod chunked;
pub mod client;
mod framing;
pub mod server;
mod writer;

#[cfg(test)]
mod tests;
