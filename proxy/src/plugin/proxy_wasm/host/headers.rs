//! Header maps: the request's and response's heads (with Envoy's pseudo-headers) and a callout
//! answer's, read and changed by filters.

use http::header::{HeaderName, HeaderValue};

use super::{Ctx, FilterState, HostResult, give, ok, read, status};
use crate::plugin::proxy_wasm::abi::{self, Status, map};
use crate::plugin::request_state::RequestState;

/// The pairs of header map `which`, pseudo-headers first as Envoy gives them.
fn map_pairs(state: &FilterState, which: i32) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let pairs = |headers: &http::HeaderMap| -> Vec<(Vec<u8>, Vec<u8>)> {
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    };
    match which {
        map::REQUEST_HEADERS => {
            let head = &state.request.as_ref()?.head;
            let mut all = vec![
                (
                    b":method".to_vec(),
                    head.method.as_str().as_bytes().to_vec(),
                ),
                (
                    b":path".to_vec(),
                    head.uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .as_bytes()
                        .to_vec(),
                ),
                (b":authority".to_vec(), authority(head).into_bytes()),
                (
                    b":scheme".to_vec(),
                    head.uri.scheme_str().unwrap_or("http").as_bytes().to_vec(),
                ),
            ];
            all.extend(pairs(&head.headers));
            Some(all)
        }
        map::RESPONSE_HEADERS => {
            let response = state.request.as_ref()?.response.as_ref()?;
            let mut all = vec![(
                b":status".to_vec(),
                response.status.as_str().as_bytes().to_vec(),
            )];
            all.extend(pairs(&response.headers));
            Some(all)
        }
        map::CALL_RESPONSE_HEADERS => {
            let response = state.call_response.as_ref()?;
            let mut all = vec![(
                b":status".to_vec(),
                response.status.to_string().into_bytes(),
            )];
            all.extend(
                response
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())),
            );
            Some(all)
        }
        // The trailers in scope, during a trailers callback; none otherwise.
        map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS => {
            Some(state.trailers.as_ref().map(pairs).unwrap_or_default())
        }
        map::CALL_RESPONSE_TRAILERS => Some(Vec::new()),
        _ => None,
    }
}

pub(super) fn authority(head: &http::request::Parts) -> String {
    head.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| head.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

pub(super) fn get_map_pairs(mut c: Ctx<'_>, which: i32, ret_ptr: i32, ret_len: i32) -> HostResult {
    let Some(pairs) = map_pairs(c.data(), which) else {
        return Ok(status(Status::NotFound));
    };
    let bytes = abi::serialize_map(pairs.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    give(&mut c, &bytes, ret_ptr, ret_len)?;
    Ok(ok())
}

pub(super) fn get_map_value(
    mut c: Ctx<'_>,
    which: i32,
    key: i32,
    key_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> HostResult {
    let key = read(&mut c, key, key_len)?.to_ascii_lowercase();
    let value = if key.first() == Some(&b':') {
        map_pairs(c.data(), which)
            .and_then(|pairs| pairs.into_iter().find(|(n, _)| *n == key).map(|(_, v)| v))
    } else {
        plain_value(c.data(), which, &key)
    };
    match value {
        Some(value) => give(&mut c, &value, ret_ptr, ret_len).map(|()| ok()),
        None => Ok(status(Status::NotFound)),
    }
}

/// One field of header map `which`, looked up without copying the map (the common read).
fn plain_value(state: &FilterState, which: i32, key: &[u8]) -> Option<Vec<u8>> {
    let request = state.request.as_ref();
    let value = match which {
        map::REQUEST_HEADERS => request?
            .head
            .headers
            .get(HeaderName::from_bytes(key).ok()?)?,
        map::RESPONSE_HEADERS => request?
            .response
            .as_ref()?
            .headers
            .get(HeaderName::from_bytes(key).ok()?)?,
        _ => {
            return map_pairs(state, which)?
                .into_iter()
                .find(|(n, _)| n == key)
                .map(|(_, v)| v);
        }
    };
    Some(value.as_bytes().to_vec())
}

/// How a header map is changed.
enum Change {
    Add,
    Replace,
    Remove,
}

/// Applies one change to header map `which` of the request in scope.
fn change_map(
    state: &mut FilterState,
    which: i32,
    name: &[u8],
    value: &[u8],
    change: Change,
) -> i32 {
    let headers = match which {
        map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS => match state.trailers.as_mut() {
            Some(trailers) => trailers,
            None => return status(Status::NotFound),
        },
        _ => {
            let Some(request) = state.request.as_mut() else {
                return status(Status::NotFound);
            };
            if name.first() == Some(&b':') {
                return change_pseudo(request, which, name, value);
            }
            match which {
                map::REQUEST_HEADERS => &mut request.head.headers,
                map::RESPONSE_HEADERS => match request.response.as_mut() {
                    Some(response) => &mut response.headers,
                    None => return status(Status::NotFound),
                },
                _ => return status(Status::BadArgument),
            }
        }
    };
    let Ok(name) = HeaderName::from_bytes(name) else {
        return status(Status::BadArgument);
    };
    if let Change::Remove = change {
        headers.remove(&name);
        return ok();
    }
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return status(Status::BadArgument);
    };
    match change {
        Change::Add => {
            headers.append(name, value);
        }
        Change::Replace | Change::Remove => {
            headers.insert(name, value);
        }
    }
    ok()
}

/// `:path`, `:method` and `:authority` of the request can be rewritten; the rest are read-only.
fn change_pseudo(request: &mut RequestState, which: i32, name: &[u8], value: &[u8]) -> i32 {
    if which != map::REQUEST_HEADERS {
        return status(Status::BadArgument);
    }
    match name {
        b":path" => match http::uri::PathAndQuery::try_from(value) {
            Ok(path) => {
                let mut parts = request.head.uri.clone().into_parts();
                parts.path_and_query = Some(path);
                match http::Uri::from_parts(parts) {
                    Ok(uri) => {
                        request.head.uri = uri;
                        ok()
                    }
                    Err(_) => status(Status::BadArgument),
                }
            }
            Err(_) => status(Status::BadArgument),
        },
        b":method" => match http::Method::from_bytes(value) {
            Ok(method) => {
                request.head.method = method;
                ok()
            }
            Err(_) => status(Status::BadArgument),
        },
        b":authority" => match HeaderValue::from_bytes(value) {
            Ok(host) => {
                request.head.headers.insert(http::header::HOST, host);
                ok()
            }
            Err(_) => status(Status::BadArgument),
        },
        _ => status(Status::BadArgument),
    }
}

pub(super) fn add_map_value(
    mut c: Ctx<'_>,
    which: i32,
    k: i32,
    kl: i32,
    v: i32,
    vl: i32,
) -> HostResult {
    let (name, value) = (read(&mut c, k, kl)?, read(&mut c, v, vl)?);
    Ok(change_map(c.data_mut(), which, &name, &value, Change::Add))
}

pub(super) fn replace_map_value(
    mut c: Ctx<'_>,
    which: i32,
    k: i32,
    kl: i32,
    v: i32,
    vl: i32,
) -> HostResult {
    let (name, value) = (read(&mut c, k, kl)?, read(&mut c, v, vl)?);
    Ok(change_map(
        c.data_mut(),
        which,
        &name,
        &value,
        Change::Replace,
    ))
}

pub(super) fn remove_map_value(mut c: Ctx<'_>, which: i32, k: i32, kl: i32) -> HostResult {
    let name = read(&mut c, k, kl)?;
    Ok(change_map(c.data_mut(), which, &name, &[], Change::Remove))
}

pub(super) fn set_map_pairs(mut c: Ctx<'_>, which: i32, ptr: i32, len: i32) -> HostResult {
    let bytes = read(&mut c, ptr, len)?;
    let Some(pairs) = abi::deserialize_map(&bytes) else {
        return Ok(status(Status::SerializationFailure));
    };
    let state = c.data_mut();
    let headers = match (which, state.request.as_mut()) {
        (map::REQUEST_TRAILERS | map::RESPONSE_TRAILERS, _) => match state.trailers.as_mut() {
            Some(trailers) => trailers,
            None => return Ok(status(Status::NotFound)),
        },
        (map::REQUEST_HEADERS, Some(r)) => &mut r.head.headers,
        (map::RESPONSE_HEADERS, Some(r)) => match r.response.as_mut() {
            Some(response) => &mut response.headers,
            None => return Ok(status(Status::NotFound)),
        },
        _ => return Ok(status(Status::BadArgument)),
    };
    headers.clear();
    for (name, value) in &pairs {
        if name.first() == Some(&b':') {
            continue;
        }
        let code = change_map(state, which, name, value, Change::Add);
        if code != ok() {
            return Ok(code);
        }
    }
    for (name, value) in pairs.iter().filter(|(n, _)| n.first() == Some(&b':')) {
        if let Some(request) = state.request.as_mut() {
            change_pseudo(request, which, name, value);
        }
    }
    Ok(ok())
}
