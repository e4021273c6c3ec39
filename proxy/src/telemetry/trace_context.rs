//! Trace context across the proxy hop: W3C `traceparent`/`tracestate` (and Zipkin B3, single or
//! multi header) read from the client, and a new parent span id written for each upstream
//! attempt, so the upstream's spans hang under the proxy's attempt span.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use switchyard_http1::NameLengths;

use crate::hex::hex;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static B3: HeaderName = HeaderName::from_static("b3");
static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// The names a trace context needs one of, by length: a request with no field of these lengths
/// (most requests) is seen to carry none in one pass over its names, without three lookups.
const CARRIERS: NameLengths = NameLengths::of(&["traceparent", "b3", "x-b3-traceid"]);

/// A 16-byte trace id, never all zero.
pub type TraceId = [u8; 16];
/// An 8-byte span id, never all zero.
pub type SpanId = [u8; 8];

/// Which header style the client used, so the upstream gets the same style back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    W3c,
    B3Single,
    B3Multi,
}

/// The trace this request belongs to and the proxy's own span in it.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// The client's span, parent of the proxy's request span; none when the proxy started
    /// the trace.
    pub parent_span_id: Option<SpanId>,
    /// The proxy's request (server) span.
    pub span_id: SpanId,
    pub sampled: bool,
    /// `tracestate`, passed on unchanged.
    pub state: Option<HeaderValue>,
    pub style: Style,
}

impl TraceContext {
    /// The context the client sent, if any valid one; the proxy's span id is fresh.
    pub fn extract(headers: &HeaderMap) -> Option<Self> {
        if !headers.keys().any(|name| CARRIERS.may_hold(name)) {
            return None;
        }
        if let Some(value) = headers.get(&TRACEPARENT)
            && let Some((trace_id, parent, sampled)) = parse_traceparent(value.as_bytes())
        {
            return Some(Self {
                trace_id,
                parent_span_id: Some(parent),
                span_id: new_span_id(),
                sampled,
                state: headers.get(&TRACESTATE).cloned(),
                style: Style::W3c,
            });
        }
        if let Some(value) = headers.get(&B3)
            && let Some((trace_id, parent, sampled)) = parse_b3_single(value.as_bytes())
        {
            return Some(Self::b3(trace_id, parent, sampled, Style::B3Single));
        }
        let trace_id = headers.get(&B3_TRACE_ID)?;
        let span_id = headers.get(&B3_SPAN_ID)?;
        let trace_id = parse_b3_trace_id(trace_id.as_bytes())?;
        let parent = parse_hex::<8>(span_id.as_bytes())?;
        let sampled = b3_sampled(
            headers.get(&B3_SAMPLED).map(HeaderValue::as_bytes),
            headers.get(&B3_FLAGS).map(HeaderValue::as_bytes),
        );
        Some(Self::b3(trace_id, parent, sampled, Style::B3Multi))
    }

    fn b3(trace_id: TraceId, parent: SpanId, sampled: bool, style: Style) -> Self {
        Self {
            trace_id,
            parent_span_id: Some(parent),
            span_id: new_span_id(),
            sampled,
            state: None,
            style,
        }
    }

    /// A new trace started by the proxy.
    pub fn start(sampled: bool) -> Self {
        Self {
            trace_id: new_trace_id(),
            parent_span_id: None,
            span_id: new_span_id(),
            sampled,
            state: None,
            style: Style::W3c,
        }
    }

    /// Writes the context for one upstream attempt whose span is `attempt_span`: the upstream
    /// sees the same trace with the attempt as its parent. `traceparent` is always written; B3
    /// headers too when the client used them.
    pub fn inject(&self, headers: &mut HeaderMap, attempt_span: SpanId) {
        let flags = if self.sampled { "01" } else { "00" };
        let traceparent = format!("00-{}-{}-{flags}", hex(&self.trace_id), hex(&attempt_span));
        insert(headers, &TRACEPARENT, traceparent);
        match &self.state {
            Some(state) => {
                headers.insert(TRACESTATE.clone(), state.clone());
            }
            None => {
                headers.remove(&TRACESTATE);
            }
        }
        let sampled = if self.sampled { "1" } else { "0" };
        match self.style {
            Style::W3c => {}
            Style::B3Single => {
                let value = format!(
                    "{}-{}-{sampled}-{}",
                    hex(&self.trace_id),
                    hex(&attempt_span),
                    hex(&self.span_id)
                );
                insert(headers, &B3, value);
            }
            Style::B3Multi => {
                insert(headers, &B3_TRACE_ID, hex(&self.trace_id));
                insert(headers, &B3_SPAN_ID, hex(&attempt_span));
                insert(headers, &B3_PARENT_SPAN_ID, hex(&self.span_id));
                insert(headers, &B3_SAMPLED, sampled.to_owned());
                headers.remove(&B3_FLAGS);
            }
        }
    }

    /// The trace id as 32 lowercase hex digits (access log, logs).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name.clone(), value);
    }
}

/// A random span id (never zero).
pub fn new_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

fn new_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`; later versions may append fields after a dash.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    if value.len() < 55 {
        return None;
    }
    let version = parse_hex::<1>(&value[0..2])?;
    if version == [0xff] || (version == [0] && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = parse_hex::<16>(&value[3..35])?;
    let parent = parse_hex::<8>(&value[36..52])?;
    let flags = parse_hex::<1>(&value[53..55])?;
    Some((trace_id, parent, flags[0] & 1 == 1))
}

/// `traceid-spanid[-sampled[-parentspanid]]`; a lone `0`/`1`/`d` carries no ids.
fn parse_b3_single(value: &[u8]) -> Option<(TraceId, SpanId, bool)> {
    let mut parts = value.split(|&b| b == b'-');
    let trace_id = parse_b3_trace_id(parts.next()?)?;
    let span_id = parse_hex::<8>(parts.next()?)?;
    let sampled = b3_sampled(parts.next(), None);
    Some((trace_id, span_id, sampled))
}

/// B3 trace ids are 64 or 128 bits; a 64-bit one is left-padded with zeros.
fn parse_b3_trace_id(value: &[u8]) -> Option<TraceId> {
    match value.len() {
        32 => parse_hex::<16>(value),
        16 => {
            let low = parse_hex::<8>(value)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// B3 sampling: `1`, `true` or the debug flag `d` sample; absent defers, which we treat as yes.
fn b3_sampled(sampled: Option<&[u8]>, flags: Option<&[u8]>) -> bool {
    if flags == Some(b"1") {
        return true;
    }
    match sampled {
        None => true,
        Some(s) => matches!(s, b"1" | b"true" | b"d"),
    }
}

/// Exactly `2 * N` lowercase or uppercase hex digits, not all zero.
fn parse_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let high = hex_digit(pair[0])?;
        let low = hex_digit(pair[1])?;
        out[i] = high << 4 | low;
    }
    (N == 1 || out != [0u8; N]).then_some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn a_w3c_parent_is_kept_and_the_upstream_gets_a_new_parent_span() {
        let incoming = headers(&[
            ("traceparent", &format!("00-{TRACE}-00f067aa0ba902b7-01")),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]);
        let ctx = TraceContext::extract(&incoming).unwrap();
        assert_eq!(ctx.trace_id_hex(), TRACE);
        assert_eq!(hex(&ctx.parent_span_id.unwrap()), "00f067aa0ba902b7");
        assert!(ctx.sampled);

        let mut outgoing = incoming.clone();
        let attempt = new_span_id();
        ctx.inject(&mut outgoing, attempt);
        let sent = outgoing.get(&TRACEPARENT).unwrap().to_str().unwrap();
        assert_eq!(sent, format!("00-{TRACE}-{}-01", hex(&attempt)));
        assert_eq!(outgoing.get(&TRACESTATE).unwrap(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            format!("00-{TRACE}-00f067aa0ba902bz-01"),
            "00-short".to_owned(),
        ] {
            assert!(
                TraceContext::extract(&headers(&[("traceparent", &bad)])).is_none(),
                "{bad}"
            );
        }
        let future = format!("01-{TRACE}-00f067aa0ba902b7-00-more");
        let ctx = TraceContext::extract(&headers(&[("traceparent", &future)])).unwrap();
        assert!(!ctx.sampled);
    }

    #[test]
    fn b3_single_and_multi_are_read_and_written_back_in_kind() {
        let single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let ctx = TraceContext::extract(&single).unwrap();
        assert_eq!(ctx.trace_id_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        let mut out = HeaderMap::new();
        let attempt = new_span_id();
        ctx.inject(&mut out, attempt);
        let b3 = out.get("b3").unwrap().to_str().unwrap();
        assert!(b3.starts_with(&format!(
            "80f198ee56343ba864fe8b2a57d3eff7-{}-1-",
            hex(&attempt)
        )));

        let multi = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        let ctx = TraceContext::extract(&multi).unwrap();
        assert_eq!(ctx.trace_id_hex(), "0000000000000000a3ce929d0e0e4736");
        assert!(!ctx.sampled);
        let mut out = multi.clone();
        ctx.inject(&mut out, attempt);
        assert_eq!(out.get("x-b3-spanid").unwrap(), hex(&attempt).as_str());
        assert_eq!(
            out.get("x-b3-parentspanid").unwrap(),
            hex(&ctx.span_id).as_str()
        );
        assert!(out.contains_key(&TRACEPARENT));
    }
}
