//! One plugin the integration tests configure per scenario: tag the request and response to show
//! chain order, answer by itself, pick a destination, retry, or misbehave (spin forever, allocate
//! without bound, trap). It never calls out, so it runs on the core entry like the shipped
//! plugins; the `caller` test plugin calls out.

use std::time::Duration;

use serde::Deserialize;
use switchyard_sdk::{Action, Chunk, Outcome, Plugin, Request, Response, shared};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Appended to `x-chain` on the request and `x-chain-response` on the response.
    #[serde(default)]
    pub tag: Option<String>,
    /// Answer every request with this status instead of forwarding.
    #[serde(default)]
    pub respond: Option<u16>,
    /// Send every request to this cluster.
    #[serde(default)]
    pub destination: Option<String>,
    /// Misbehave in on_request.
    #[serde(default)]
    pub misbehave: Option<Misbehave>,
    /// Retry failed attempts (5xx or no response) up to this many times.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Ask for a tick this often (ms): each counts in `testkit.ticks`; requests get the count in
    /// `x-ticks`.
    #[serde(default)]
    pub tick_ms: Option<u32>,
    /// Stream response bodies: ASCII letters upper-cased chunk by chunk, and `<END>` appended.
    #[serde(default)]
    pub stream_upper: bool,
    /// Stream request bodies: ASCII letters lower-cased chunk by chunk, and `<end>` appended.
    #[serde(default)]
    pub stream_lower_requests: bool,
    /// Stream response bodies and fail on every chunk.
    #[serde(default)]
    pub stream_fail: bool,
    /// In on_request, change the request and read the changes back in the same hook; what it
    /// saw goes upstream in `x-read-back`.
    #[serde(default)]
    pub read_back: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Misbehave {
    /// Never returns.
    Spin,
    /// Allocates until something stops it.
    Allocate,
    /// Traps on every call.
    Trap,
    /// Traps on every other call (to show recovery).
    TrapEveryOther,
    /// Answers an `Err` from a function where `?` was used (`Action::from(result)`).
    Fail,
}

pub struct Testkit {
    config: Config,
}

impl Plugin for Testkit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if let Some(ms) = config.tick_ms {
            switchyard_sdk::timer::tick_every(Duration::from_millis(u64::from(ms)));
        }
        if config.stream_upper || config.stream_fail {
            switchyard_sdk::streaming::stream_response_body();
        }
        if config.stream_lower_requests {
            switchyard_sdk::streaming::stream_request_body();
        }
        Ok(Self { config })
    }

    fn on_request_chunk(&self, _: &Request, chunk: &[u8], end: bool) -> Chunk {
        let mut out = chunk.to_ascii_lowercase();
        if end {
            out.extend_from_slice(b"<end>");
        }
        Chunk::Replace(out)
    }

    fn on_response_chunk(&self, _: &Request, _: &Response, chunk: &[u8], end: bool) -> Chunk {
        if self.config.stream_fail {
            return Chunk::Fail("testkit fails on response chunks".into());
        }
        let mut out = chunk.to_ascii_uppercase();
        if end {
            out.extend_from_slice(b"<END>");
        }
        Chunk::Replace(out)
    }

    fn on_tick(&self) -> Action {
        shared::counter_add("testkit.ticks", 1);
        Action::Continue
    }

    fn on_request(&self, req: &mut Request) -> Action {
        if self.config.misbehave == Some(Misbehave::Fail) {
            return fail_with_question_mark(req).into();
        }
        if let Some(m) = self.config.misbehave {
            misbehave(m);
        }
        if let Some(tag) = &self.config.tag {
            let _ = req.add_header("x-chain", tag);
        }
        if self.config.read_back {
            read_back(req);
        }
        if self.config.tick_ms.is_some() {
            let ticks = shared::counter_get("testkit.ticks").to_string();
            let _ = req.add_response_header("x-ticks", &ticks);
        }
        if let Some(cluster) = &self.config.destination
            && let Err(e) = req.set_destination(cluster)
        {
            switchyard_sdk::log::warn(&format!("cannot route: {e}"));
        }
        match self.config.respond {
            Some(status) => Action::respond(status, format!("answered by {}\n", self.name())),
            None => Action::Continue,
        }
    }

    fn on_upstream_response(&self, req: &mut Request, outcome: Outcome) -> Action {
        let Some(retries) = self.config.retries else {
            return Action::Continue;
        };
        let failed = match outcome {
            Outcome::Response(status) => status >= 500,
            Outcome::Error(_) => true,
        };
        if failed && req.attempt() <= retries {
            Action::Retry {
                delay: Duration::from_millis(1),
            }
        } else {
            Action::Continue
        }
    }

    fn on_response(&self, req: &mut Request, resp: &mut Response) -> Action {
        if self.config.read_back {
            // The upstream's header lent, then one it did not send, copied.
            let name = resp.with_header("x-echo-name", |v| v.unwrap_or("none").to_owned());
            let missing = resp.header("x-not-sent").unwrap_or_else(|| "none".into());
            let _ = resp.set_header("x-read-back-response", &format!("{name}|{missing}"));
        }
        if let Some(tag) = &self.config.tag {
            let _ = resp.add_header("x-chain-response", tag);
        }
        if self.config.retries.is_some() {
            let _ = resp.set_header("x-attempts", &req.attempt().to_string());
        }
        Action::Continue
    }
}

impl Testkit {
    fn name(&self) -> &str {
        self.config.tag.as_deref().unwrap_or("testkit")
    }
}

/// A hook body written with `?`: the header name is invalid, so the `Err` comes from the host.
fn fail_with_question_mark(req: &mut Request) -> Result<Action, switchyard_sdk::HostError> {
    req.set_header("not a header name", "x")?;
    Ok(Action::Continue)
}

/// Each change is read back before the next: a plugin sees its own changes in order (a header
/// and the authority read before and after a change, too).
fn read_back(req: &mut Request) {
    let shown = |value: Option<String>| value.unwrap_or_else(|| "none".into());
    read_forwarding(req);
    let user = shown(req.header("x-user"));
    let authority = shown(req.authority());
    let _ = req.set_header("x-user", "changed");
    let changed_user = req.with_header("x-user", |v| v.unwrap_or("none").to_owned());
    let _ = req.set_authority("moved.example");
    let moved_authority = shown(req.authority());
    let _ = req.set_header("x-mine", "set");
    let set = shown(req.header("x-mine"));
    let _ = req.add_header("x-mine", "added");
    let added = req.header_all("x-mine").join("+");
    req.remove_header("x-mine");
    let removed = shown(req.header("x-mine"));
    req.context_set("testkit.mine", b"kept");
    let context = shown(
        req.context_get("testkit.mine")
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
    );
    let refused = match req.set_header("bad name", "v") {
        Ok(()) => "accepted".to_owned(),
        Err(e) => e.to_string(),
    };
    let first_path = req.path();
    let _ = req.set_path(&format!("/moved{first_path}"));
    let moved = req.path();
    let _ = req.set_header(
        "x-read-back",
        &format!(
            "{user}>{changed_user}|{authority}>{moved_authority}|{set}|{added}|{removed}|{context}|{refused}|{moved}"
        ),
    );
}

/// The fields the proxy adds (kept beside the request's map until a plugin lists or changes
/// the headers) read by name, listed, then one replaced; what it saw goes upstream in
/// `x-forwarding-read`.
fn read_forwarding(req: &mut Request) {
    let shown = |value: Option<String>| value.unwrap_or_else(|| "none".into());
    // A change to another header first: the fields stay beside the map, read as before.
    req.remove_header("x-not-sent");
    let forwarded_for = req.with_header("x-forwarded-for", |v| v.unwrap_or("none").to_owned());
    let via = shown(req.header("via"));
    let proto = req.header_all("x-forwarded-proto").join("+");
    let id = req.header("x-request-id");
    let names = req.header_names();
    let listed = [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "via",
    ]
    .iter()
    .filter(|name| names.iter().any(|n| n == *name))
    .count();
    let same_id = id.is_some() && req.header("x-request-id") == id;
    let _ = req.set_header("x-forwarded-proto", "plugin");
    let _ = req.set_header(
        "x-forwarding-read",
        &format!("{forwarded_for}|{via}|{proto}|{listed} listed|same id {same_id}"),
    );
}

fn misbehave(m: Misbehave) {
    match m {
        Misbehave::Fail => {}
        Misbehave::Spin => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Misbehave::Allocate => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1024 * 1024]);
                std::hint::black_box(&hoard);
            }
        }
        Misbehave::Trap => panic!("testkit was told to trap"),
        Misbehave::TrapEveryOther => {
            if shared::counter_add("testkit.calls", 1) % 2 == 1 {
                panic!("testkit traps on odd calls");
            }
        }
    }
}

switchyard_sdk::export_plugin!(Testkit);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testing::TestHost;

    #[test]
    fn tags_and_routes() {
        let kit =
            switchyard_sdk::load::<Testkit>(r#"{ "tag": "a", "destination": "v2" }"#).unwrap();
        let mut host = TestHost::get("/").cluster("v2");
        assert_eq!(host.on_request(&kit), Action::Continue);
        assert_eq!(host.request_header("x-chain"), Some("a"));
        assert_eq!(host.destination.as_deref(), Some("v2"));
    }

    #[test]
    fn retries_failures_up_to_the_limit() {
        let kit = switchyard_sdk::load::<Testkit>(r#"{ "retries": 1 }"#).unwrap();
        let mut host = TestHost::get("/");
        let retry = host.on_upstream_response(&kit, Outcome::Response(503));
        assert!(matches!(retry, Action::Retry { .. }));
        host.attempt = 2;
        assert_eq!(
            host.on_upstream_response(&kit, Outcome::Response(503)),
            Action::Continue
        );
    }
}
