//! Active health checks over the standard gRPC health protocol (`grpc.health.v1.Health/Check`),
//! as Envoy's `grpc_health_check`: an endpoint passes when the call ends with status OK and the
//! answer says `SERVING`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HOST, HeaderValue, TE, USER_AGENT};
use http_body_util::BodyExt;

use super::{Endpoint, Pace, ResponseFields};
use crate::body::ProxyBody;

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Asks `endpoint` whether `service` (`""`: the whole server) is serving, within `timeout`.
pub async fn probe(endpoint: &Endpoint, service: &str, authority: &str, timeout: Duration) -> bool {
    let request = http::Request::post(CHECK_PATH)
        .header(HOST, authority)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
        .header(TE, HeaderValue::from_static("trailers"))
        .header(
            USER_AGENT,
            HeaderValue::from_static("switchyard-health-check"),
        )
        .body(ProxyBody::full(check_request(service)));
    let Ok(request) = request else {
        return false;
    };
    let call = async {
        let response = endpoint
            .send(request, &[], Pace::Now, ResponseFields::Map, None)
            .await
            .ok()?;
        if response.status() != http::StatusCode::OK {
            return None;
        }
        let head_status = crate::grpc::status(response.headers());
        let collected = response.into_body().collect().await.ok()?;
        let status = head_status.or_else(|| collected.trailers().and_then(crate::grpc::status));
        (status == Some(0)).then(|| collected.to_bytes())
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Some(body)) => serving_status(&body) == Some(SERVING),
        _ => false,
    }
}

/// One length-prefixed gRPC message holding `HealthCheckRequest { service }`.
fn check_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(&message);
    framed.freeze()
}

/// `HealthCheckResponse.status` from one length-prefixed, uncompressed message (an absent
/// field is 0, `UNKNOWN`).
fn serving_status(body: &[u8]) -> Option<u64> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (len, mut message) = rest.split_at(4);
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    message = message.get(..len)?;
    let mut status = 0;
    while !message.is_empty() {
        let (key, rest) = varint(message)?;
        let (value, rest) = match key & 7 {
            0 => varint(rest)?,
            2 => {
                let (len, rest) = varint(rest)?;
                let len = usize::try_from(len).ok()?;
                (0, rest.get(len..)?)
            }
            _ => return None,
        };
        if key == 0x08 {
            status = value;
        }
        message = rest;
    }
    Some(status)
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_and_answer_are_protobuf_in_grpc_frames() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("svc")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0), "absent: UNKNOWN");
        assert_eq!(serving_status(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "cut short");
    }
}
