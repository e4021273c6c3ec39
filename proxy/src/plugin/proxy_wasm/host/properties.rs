//! Properties: the well-known attributes of a request and its connection, and the filters' own.

use super::headers::authority;
use super::{Ctx, FilterState, HostResult, give, ok, read, status};
use crate::plugin::proxy_wasm::abi::{self, Status};

/// The well-known attributes a filter can read (Envoy's names), as Envoy encodes them: strings
/// as bytes, integers as 8 bytes little-endian, booleans as one byte.
fn property(state: &FilterState, path: &[&str]) -> Option<Vec<u8>> {
    let int = |n: i64| n.to_le_bytes().to_vec();
    let text = |s: &str| s.as_bytes().to_vec();
    let key = path.join(".");
    if key == "plugin_name" {
        return Some(text(&state.env.name));
    }
    if matches!(key.as_str(), "plugin_root_id" | "plugin_vm_id") {
        return Some(Vec::new());
    }
    let request = state.request.as_ref()?;
    let head = &request.head;
    let tls = request.tls.as_ref();
    let peer_identity = tls.and_then(|t| t.identity.as_ref());
    let found = match key.as_str() {
        "request.path" => text(head.uri.path_and_query().map_or("/", |p| p.as_str())),
        "request.url_path" => text(head.uri.path()),
        "request.method" => text(head.method.as_str()),
        "request.host" => text(&authority(head)),
        "request.scheme" => text(if tls.is_some() { "https" } else { "http" }),
        "request.protocol" => text(match head.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        }),
        "request.id" => request.request_id.as_bytes().to_vec(),
        "request.useragent" => head
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| v.as_bytes().to_vec())?,
        "source.address" => text(&request.peer.to_string()),
        "source.port" => int(i64::from(request.peer.port())),
        "connection.mtls" => vec![u8::from(peer_identity.is_some())],
        "connection.tls_version" if tls.is_some() => text("TLSv1.3"),
        "connection.requested_server_name" => text(tls.and_then(|t| t.sni.as_deref())?),
        "connection.uri_san_peer_certificate" => {
            text(peer_identity.and_then(|i| i.spiffe_id.as_deref())?)
        }
        "connection.subject_peer_certificate" => {
            text(peer_identity.and_then(|i| i.subject.as_deref())?)
        }
        "connection.dns_san_peer_certificate" => {
            text(peer_identity.and_then(|i| i.dns_names.first().map(String::as_str))?)
        }
        "listener_name" | "xds.listener_name" => text(&request.scope.listener),
        "cluster_name" | "xds.cluster_name" => text(&request.destination.as_ref()?.tag.name),
        "response.code" => int(i64::from(request.response.as_ref()?.status.as_u16())),
        _ => request.context.get(&format!("proxy-wasm:{key}"))?.to_vec(),
    };
    Some(found)
}

pub(super) fn get_property(
    mut c: Ctx<'_>,
    ptr: i32,
    len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> HostResult {
    let raw = read(&mut c, ptr, len)?;
    let path = abi::property_path(&raw);
    match property(c.data(), &path) {
        Some(value) => give(&mut c, &value, ret_ptr, ret_len).map(|()| ok()),
        None => Ok(status(Status::NotFound)),
    }
}

/// A filter's own attributes, kept with the request for the filters after it.
pub(super) fn set_property(
    mut c: Ctx<'_>,
    ptr: i32,
    len: i32,
    value: i32,
    value_len: i32,
) -> HostResult {
    let raw = read(&mut c, ptr, len)?;
    let value = read(&mut c, value, value_len)?;
    let key = format!("proxy-wasm:{}", abi::property_path(&raw).join("."));
    match c.data_mut().request.as_mut() {
        Some(request) => {
            request.context.insert(key, value);
            Ok(ok())
        }
        None => Ok(status(Status::NotFound)),
    }
}
