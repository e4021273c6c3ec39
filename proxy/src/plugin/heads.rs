//! The `request` and `response` imports: plugins reading and changing the request head, the
//! response head, and the headers added to the client's response.

use super::bindings::switchyard::plugin::{reads, request, response};
use super::host::HostState;

/// What a `reads` import returns when there is nothing to read.
pub(super) const READ_ABSENT: u32 = u32::MAX;
/// What a `reads` import returns when the proxy cannot write into the plugin's memory.
pub(super) const READ_UNSUPPORTED: u32 = u32::MAX - 1;

/// Through the component model a host function cannot write into the plugin's memory: a
/// component reads through `request` and `response` (the core entry's imports write, in
/// `core_abi::head_imports`).
impl reads::Host for HostState {
    fn path_into(&mut self, _: u32, _: u32) -> u32 {
        READ_UNSUPPORTED
    }

    fn request_header_into(&mut self, _: String, _: u32, _: u32) -> u32 {
        READ_UNSUPPORTED
    }

    fn response_header_into(&mut self, _: String, _: u32, _: u32) -> u32 {
        READ_UNSUPPORTED
    }
}

fn header_first(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<String> {
    headers.get(name).map(header_text)
}

fn texts(values: Vec<http::HeaderValue>) -> Vec<String> {
    values.iter().map(header_text).collect()
}

/// A header value as text for a plugin, owned (the component bindings hand over `String`s).
fn header_text(value: &http::HeaderValue) -> String {
    value_text(value).into_owned()
}

/// A header value as text for a plugin, as both entries give it. Values are nearly always
/// ASCII, checked a word at a time; only a value that is not UTF-8 takes the slower lossy path.
pub(super) fn value_text(value: &http::HeaderValue) -> std::borrow::Cow<'_, str> {
    match super::text::utf8(value.as_bytes()) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value.as_bytes()),
    }
}

fn header_names(headers: &http::HeaderMap) -> Vec<String> {
    headers.keys().map(|k| k.as_str().to_owned()).collect()
}

pub(super) const NO_REQUEST: &str = "no request in this hook";

impl request::Host for HostState {
    fn method(&mut self) -> String {
        self.req()
            .map(|r| r.head.method.to_string())
            .unwrap_or_default()
    }

    fn path(&mut self) -> String {
        self.req()
            .and_then(|r| r.head.uri.path_and_query())
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    }

    fn set_path(&mut self, path_and_query: String) -> Result<(), String> {
        let req = self.req_mut().ok_or(NO_REQUEST)?;
        if !path_and_query.starts_with('/') {
            return Err(format!("{path_and_query:?} must start with '/'"));
        }
        let mut parts = req.head.uri.clone().into_parts();
        parts.path_and_query = Some(
            path_and_query
                .parse()
                .map_err(|e| format!("invalid path {path_and_query:?}: {e}"))?,
        );
        req.head.uri = http::Uri::from_parts(parts).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn authority(&mut self) -> Option<String> {
        let req = self.req()?;
        req.head
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| header_first(&req.head.headers, &http::header::HOST))
    }

    fn header(&mut self, name: String) -> Option<String> {
        self.request_header(&name).as_ref().map(header_text)
    }

    fn header_all(&mut self, name: String) -> Vec<String> {
        texts(self.request_header_all(&name))
    }

    fn header_names(&mut self) -> Vec<String> {
        self.req_mut()
            .map(|r| header_names(r.request_headers()))
            .unwrap_or_default()
    }

    fn set_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.change_request_header(HeaderChange::Set, &name, value.into())
    }

    fn add_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.change_request_header(HeaderChange::Add, &name, value.into())
    }

    fn add_response_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.add_client_response_header(&name, value.as_bytes())
    }

    fn remove_header(&mut self, name: String) {
        self.remove_request_header(&name);
    }
}

/// Whether a header change replaces the header's values or adds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderChange {
    Set,
    Add,
}

/// The request changes a plugin may make one by one (`request` imports) or in a batch.
impl HostState {
    pub(super) fn change_request_header(
        &mut self,
        change: HeaderChange,
        name: &str,
        value: bytes::Bytes,
    ) -> Result<(), String> {
        let (name, value) = self.parse_header(name, value)?;
        let req = self.req_mut().ok_or(NO_REQUEST)?;
        req.request_headers_for(&name);
        let head = &mut req.head;
        if change == HeaderChange::Add {
            head.headers.append(name, value);
            return Ok(());
        }
        if name == http::header::HOST && head.uri.authority().is_some() {
            // HTTP/2 and absolute-form requests carry the authority in the URI, which wins over
            // Host: a host rewrite must change it there too.
            let mut parts = head.uri.clone().into_parts();
            parts.authority = Some(
                http::uri::Authority::try_from(value.as_bytes())
                    .map_err(|e| format!("invalid host {value:?}: {e}"))?,
            );
            head.uri = http::Uri::from_parts(parts).map_err(|e| e.to_string())?;
        }
        head.headers.insert(name, value);
        Ok(())
    }

    pub(super) fn add_client_response_header(
        &mut self,
        name: &str,
        value: &[u8],
    ) -> Result<(), String> {
        let name = self
            .header_name(name)
            .ok_or_else(|| format!("invalid header name {name:?}"))?;
        let value = self
            .client_header_value(value)
            .ok_or_else(|| format!("invalid value for header {name}"))?;
        self.req_mut()
            .ok_or(NO_REQUEST)?
            .response_headers_to_add
            .push((name, value));
        Ok(())
    }

    /// Removes a request header by a name the plugin has likely used before (the name cache
    /// spares parsing it again); a name that is none removes nothing.
    pub(super) fn remove_request_header(&mut self, name: &str) {
        self.with_request_and_name(name, |req, name| {
            if let Some(req) = req {
                req.request_headers_for(name).remove(name);
            }
        });
    }

    /// `f` over the request (if this hook has one) and the header name a plugin wrote: a name
    /// it used before is borrowed from the name cache, not cloned (a custom name's clone is a
    /// reference count); `None` for a name that is none.
    fn with_request_and_name<R>(
        &mut self,
        name: &str,
        f: impl FnOnce(Option<&mut super::RequestState>, &http::HeaderName) -> R,
    ) -> Option<R> {
        if let Some(known) = self.custom_header_names.known(name.as_bytes()) {
            return Some(f(self.request.as_deref_mut(), known));
        }
        let name = self.header_name(name)?;
        Some(f(self.request.as_deref_mut(), &name))
    }
}

impl response::Host for HostState {
    fn status(&mut self) -> Option<u16> {
        self.req()?.response.as_ref().map(|r| r.status.as_u16())
    }

    fn set_status(&mut self, status: u16) -> Result<(), String> {
        let status = http::StatusCode::from_u16(status)
            .map_err(|_| format!("{status} is not an HTTP status"))?;
        let response = self
            .req_mut()
            .and_then(|r| r.response.as_mut())
            .ok_or("there is no response head in this hook")?;
        response.status = status;
        Ok(())
    }

    fn header(&mut self, name: String) -> Option<String> {
        self.response_header(&name).as_ref().map(header_text)
    }

    fn header_all(&mut self, name: String) -> Vec<String> {
        texts(self.response_header_all(&name))
    }

    fn header_names(&mut self) -> Vec<String> {
        self.response_headers()
            .map(header_names)
            .unwrap_or_default()
    }

    fn set_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.change_response_header(HeaderChange::Set, &name, value.into())
    }

    fn add_header(&mut self, name: String, value: String) -> Result<(), String> {
        self.change_response_header(HeaderChange::Add, &name, value.into())
    }

    fn remove_header(&mut self, name: String) {
        self.remove_response_header(&name);
    }
}

/// Reads and changes of the heads by borrowed names, for the component bindings above and the
/// core entry's imports alike. Values come back as the head holds them (a clone shares the
/// bytes).
impl HostState {
    pub(super) fn request_header(&mut self, name: &str) -> Option<http::HeaderValue> {
        self.with_request_and_name(name, |req, name| req?.request_header(name).cloned())
            .flatten()
    }

    pub(super) fn request_header_all(&mut self, name: &str) -> Vec<http::HeaderValue> {
        let Some(name) = self.header_name(name) else {
            return Vec::new();
        };
        self.req()
            .map(|r| r.request_header_all(&name))
            .unwrap_or_default()
    }

    pub(super) fn response_header(&mut self, name: &str) -> Option<http::HeaderValue> {
        let name = self.header_name(name)?;
        self.response_headers()?.get(&name).cloned()
    }

    pub(super) fn response_header_all(&mut self, name: &str) -> Vec<http::HeaderValue> {
        let Some(name) = self.header_name(name) else {
            return Vec::new();
        };
        self.response_headers()
            .map(|h| h.get_all(&name).iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn change_response_header(
        &mut self,
        change: HeaderChange,
        name: &str,
        value: bytes::Bytes,
    ) -> Result<(), String> {
        let (name, value) = self.parse_header(name, value)?;
        let headers = self.response_headers_mut()?;
        if change == HeaderChange::Add {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
        Ok(())
    }

    pub(super) fn remove_response_header(&mut self, name: &str) {
        let Some(name) = self.header_name(name) else {
            return;
        };
        if let Ok(headers) = self.response_headers_mut() {
            headers.remove(&name);
        }
    }
}
