//! A request body as it comes from the client: off an HTTP/1.1 connection through Switchyard's
//! own engine (`Left`), or off an HTTP/2 stream through hyper (`Right`).

use http_body_util::Either;
use hyper::body::Incoming;
use switchyard_http1::server::RequestBody;

/// The client's request body, whichever protocol carries it: `Left` for HTTP/1.1, `Right` for
/// HTTP/2. Its errors are boxed, as [`super::BodyError`].
pub type ClientBody = Either<RequestBody, Incoming>;
