//! Switchyard's own HTTP/1.1 engine, both sides. Toward clients (`server`): one task per
//! connection reads each request head with `httparse` off the connection's buffer, calls the
//! service in the same task and writes the response head with the body's first piece in one
//! vectored write; the request body reads the connection itself. Toward upstreams (`client`):
//! the request's own task writes it the same way, and the response body owns the connection.
//! No connection task and no channel on either side. hyper speaks HTTP/2 beside it.
//!
//! A crate of its own so that it is built and tested without the proxy (the fuzz targets in
//! `fuzz/` use it too).
#![forbid(unsafe_code)]

pub mod added;
pub mod chunked;
pub mod client;
pub mod coarse_clock;
pub mod fields;
mod framing;
mod names;
mod passed;
mod pending;
mod read_ahead;
pub mod server;
mod spare;
mod writer;

pub use names::NameLengths;

#[cfg(test)]
mod test_inputs;
#[cfg(test)]
mod tests;
