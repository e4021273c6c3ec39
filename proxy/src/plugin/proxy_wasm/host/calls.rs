//! Answers and callouts: `proxy_send_local_response` and `proxy_http_call`.

use std::sync::Arc;

use super::{Callout, Ctx, HostResult, ok, read, read_string, status, write_u32};
use crate::plugin::bindings::{HttpRequest, LocalResponse};
use crate::plugin::proxy_wasm::abi::{self, Status};

#[allow(clippy::too_many_arguments)]
pub(super) fn send_local_response(
    mut c: Ctx<'_>,
    code: i32,
    _details: i32,
    _details_len: i32,
    body: i32,
    body_len: i32,
    headers: i32,
    headers_len: i32,
    grpc_status: i32,
) -> HostResult {
    let body = read(&mut c, body, body_len)?;
    let raw = read(&mut c, headers, headers_len)?;
    let Some(pairs) = abi::deserialize_map(&raw) else {
        return Ok(status(Status::SerializationFailure));
    };
    let Ok(code) = u16::try_from(code) else {
        return Ok(status(Status::BadArgument));
    };
    if !(200..=599).contains(&code) {
        return Ok(status(Status::BadArgument));
    }
    let mut headers: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let body = if grpc_status >= 0 {
        // A gRPC answer: the status in the (trailers-only) head, the body as its message.
        headers.push(("content-type".into(), "application/grpc".into()));
        headers.push(("grpc-status".into(), grpc_status.to_string()));
        if !body.is_empty() {
            headers.push((
                "grpc-message".into(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Vec::new()
    } else {
        body
    };
    c.data_mut().local_response = Some(LocalResponse {
        status: code,
        headers,
        body,
    });
    Ok(ok())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn http_call(
    mut c: Ctx<'_>,
    upstream: i32,
    upstream_len: i32,
    headers: i32,
    headers_len: i32,
    body: i32,
    body_len: i32,
    _trailers: i32,
    _trailers_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> HostResult {
    let cluster = read_string(&mut c, upstream, upstream_len)?;
    let raw = read(&mut c, headers, headers_len)?;
    let body = read(&mut c, body, body_len)?;
    let Some(pairs) = abi::deserialize_map(&raw) else {
        return Ok(status(Status::SerializationFailure));
    };
    let state = c.data();
    let clusters = state
        .request
        .as_ref()
        .map(|r| Arc::clone(&r.scope.clusters))
        .or_else(|| state.clusters.clone());
    if clusters.is_none_or(|c| c.by_name(&cluster).is_none()) {
        return Ok(status(Status::BadArgument));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let pseudo = |name: &[u8]| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| text(v));
    let mut plain: Vec<(String, String)> = pairs
        .iter()
        .filter(|(n, _)| n.first() != Some(&b':'))
        .map(|(n, v)| (text(n), text(v)))
        .collect();
    if let Some(authority) = pseudo(b":authority") {
        plain.push(("host".into(), authority));
    }
    let request = HttpRequest {
        method: pseudo(b":method").unwrap_or_else(|| "GET".into()),
        path: pseudo(b":path").unwrap_or_else(|| "/".into()),
        headers: plain,
        body,
        timeout_ms: u32::try_from(timeout_ms).ok().filter(|ms| *ms > 0),
    };
    let state = c.data_mut();
    let token = state.next_token;
    state.next_token = state.next_token.wrapping_add(1).max(1);
    state.callouts.push(Callout {
        token,
        cluster,
        request,
    });
    write_u32(&mut c, ret_token, token)?;
    Ok(ok())
}
