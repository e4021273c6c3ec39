//! gRPC status codes (grpc/doc/statuscodes.md) and how a response carries them: a gRPC call that
//! fails before sending a message answers with a *trailers-only* response, HTTP 200 with
//! `grpc-status` (and `grpc-message`) in its head, which [`crate::Response::grpc_status`] reads.

/// The call succeeded.
pub const OK: u32 = 0;
/// The client cancelled the call.
pub const CANCELLED: u32 = 1;
/// An error with no better code (`UNKNOWN`).
pub const UNKNOWN: u32 = 2;
/// The client sent something invalid, whatever the server's state.
pub const INVALID_ARGUMENT: u32 = 3;
/// The deadline passed before the call finished.
pub const DEADLINE_EXCEEDED: u32 = 4;
/// Something the call names does not exist.
pub const NOT_FOUND: u32 = 5;
/// What the call would create exists already.
pub const ALREADY_EXISTS: u32 = 6;
/// The caller may not do this (it is known; see `UNAUTHENTICATED` otherwise).
pub const PERMISSION_DENIED: u32 = 7;
/// A quota or resource ran out (rate limits answer this).
pub const RESOURCE_EXHAUSTED: u32 = 8;
/// The system is not in the state the call needs (do not retry as is).
pub const FAILED_PRECONDITION: u32 = 9;
/// The call was aborted, typically by a concurrency conflict (retry at a higher level).
pub const ABORTED: u32 = 10;
/// A value is past the valid range.
pub const OUT_OF_RANGE: u32 = 11;
/// The server does not implement the method.
pub const UNIMPLEMENTED: u32 = 12;
/// An invariant of the server broke.
pub const INTERNAL: u32 = 13;
/// The service is (transiently) unavailable: the status most worth retrying.
pub const UNAVAILABLE: u32 = 14;
/// Data was lost or corrupted beyond recovery.
pub const DATA_LOSS: u32 = 15;
/// The caller has no valid credentials.
pub const UNAUTHENTICATED: u32 = 16;

/// The header (or trailer) holding a call's status code.
pub const STATUS_HEADER: &str = "grpc-status";
/// The header (or trailer) holding a call's status message, percent-encoded.
pub const MESSAGE_HEADER: &str = "grpc-message";

/// Reads a `grpc-status` value: a decimal code, nothing else.
pub fn parse_status(value: &str) -> Option<u32> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Whether a `content-type` value is gRPC's (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc_content_type(value: &str) -> bool {
    value
        .strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_content_types_are_read_strictly() {
        assert_eq!(parse_status("14"), Some(UNAVAILABLE));
        assert_eq!(parse_status(" 0 "), Some(OK));
        assert_eq!(parse_status("-1"), None);
        assert_eq!(parse_status("x"), None);
        assert!(is_grpc_content_type("application/grpc"));
        assert!(is_grpc_content_type("application/grpc+proto"));
        assert!(!is_grpc_content_type("application/grpc-web"));
        assert!(!is_grpc_content_type("application/json"));
    }
}
