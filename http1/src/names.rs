//! Field names as a head is parsed: the ones most messages carry are matched whole, in the
//! spellings clients and servers write them, before `http`'s parser — which folds every name's
//! case byte by byte into a scratch buffer and then matches it — is asked. Names outside that
//! list (`x-request-id`, `traceparent`, an API key's header) are kept per thread once seen,
//! so the next message's copy shares the first one's bytes instead of being parsed and
//! allocated again.

use std::cell::RefCell;

use http::HeaderMap;
use http::header::{self, HeaderName, InvalidHeaderName};

/// How many names outside that list a thread keeps; past this, each new one replaces the
/// oldest (a client cycling through many names only pays the parse it always paid).
const RECENT_NAMES: usize = 16;
/// Longer names are not kept: the list holds a few hundred bytes per thread at most, whatever
/// clients send.
const RECENT_NAME_BYTES: usize = 64;

thread_local! {
    /// The names outside the list `header_name` matches that this thread parsed lately, in lower
    /// case.
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            names: Vec::new(),
            oldest: 0,
        })
    };
}

/// A short list of names, replaced oldest first when full.
struct Recent {
    names: Vec<HeaderName>,
    oldest: usize,
}

impl Recent {
    fn find(&self, bytes: &[u8]) -> Option<HeaderName> {
        self.names
            .iter()
            .find(|name| name.as_str().as_bytes() == bytes)
            .cloned()
    }

    fn keep(&mut self, name: &HeaderName) {
        if self.names.len() < RECENT_NAMES {
            self.names.push(name.clone());
        } else {
            self.names[self.oldest] = name.clone();
            self.oldest = (self.oldest + 1) % RECENT_NAMES;
        }
    }
}

/// A name outside the list `header_name` matches: one this thread has seen, else parsed and,
/// when written in lower case (as nearly every client writes them, and the spelling a lookup
/// compares) and of a usual length, kept.
fn uncommon_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    if let Some(known) = RECENT.with_borrow(|recent| recent.find(bytes)) {
        return Ok(known);
    }
    let name = HeaderName::from_bytes(bytes)?;
    if bytes.len() <= RECENT_NAME_BYTES && name.as_str().as_bytes() == bytes {
        RECENT.with_borrow_mut(|recent| recent.keep(&name));
    }
    Ok(name)
}

/// The name `bytes` spell; what `HeaderName::from_bytes` gives, sooner for the usual names.
pub fn header_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let known = match bytes {
        b"host" | b"Host" => header::HOST,
        b"user-agent" | b"User-Agent" => header::USER_AGENT,
        b"accept" | b"Accept" => header::ACCEPT,
        b"accept-encoding" | b"Accept-Encoding" => header::ACCEPT_ENCODING,
        b"accept-language" | b"Accept-Language" => header::ACCEPT_LANGUAGE,
        b"authorization" | b"Authorization" => header::AUTHORIZATION,
        b"cookie" | b"Cookie" => header::COOKIE,
        b"content-type" | b"Content-Type" => header::CONTENT_TYPE,
        b"content-length" | b"Content-Length" => header::CONTENT_LENGTH,
        b"connection" | b"Connection" => header::CONNECTION,
        b"transfer-encoding" | b"Transfer-Encoding" => header::TRANSFER_ENCODING,
        b"date" | b"Date" => header::DATE,
        b"server" | b"Server" => header::SERVER,
        b"cache-control" | b"Cache-Control" => header::CACHE_CONTROL,
        b"content-encoding" | b"Content-Encoding" => header::CONTENT_ENCODING,
        b"etag" | b"ETag" => header::ETAG,
        b"last-modified" | b"Last-Modified" => header::LAST_MODIFIED,
        b"location" | b"Location" => header::LOCATION,
        b"set-cookie" | b"Set-Cookie" => header::SET_COOKIE,
        b"vary" | b"Vary" => header::VARY,
        _ => return uncommon_name(bytes),
    };
    Ok(known)
}

/// The lengths of a few field names, one bit each: a field whose name has none of them is none
/// of those names, which is then known without comparing it to each (most fields, in practice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameLengths(u32);

impl NameLengths {
    /// The lengths of `names`, each shorter than 32 bytes.
    pub const fn of(names: &[&str]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < names.len() {
            assert!(names[i].len() < 32, "a name of 32 bytes or more");
            bits |= 1 << names[i].len();
            i += 1;
        }
        Self(bits)
    }

    /// The lengths of the names of `headers`' fields (those shorter than 32 bytes), in one pass
    /// over them: to be asked with [`NameLengths::may_meet`] before looking fields up.
    pub fn of_fields(headers: &HeaderMap) -> Self {
        Self(headers.keys().fold(0, |bits, name| bits | bit(name)))
    }

    /// Whether `name` can be one of the names: `false` proves it is none of them.
    pub fn may_hold(self, name: &HeaderName) -> bool {
        self.0 & bit(name) != 0
    }

    /// Whether a field of these lengths can be one of `names` (none 32 bytes or longer): `false`
    /// proves it is none of them.
    pub fn may_meet(self, names: NameLengths) -> bool {
        self.0 & names.0 != 0
    }
}

/// The bit of `name`'s length; none for 32 bytes or more.
fn bit(name: &HeaderName) -> u32 {
    let len = name.as_str().len();
    if len < 32 { 1 << len } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::{NameLengths, header_name};
    use http::header::HeaderName;

    #[test]
    fn name_lengths_hold_their_names_and_tell_other_lengths_apart() {
        let lengths = NameLengths::of(&["te", "connection"]);
        for name in ["te", "connection", "keep-alive", "user-agent"] {
            assert!(lengths.may_hold(&HeaderName::from_static(name)), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "x-a-name-of-more-than-32-bytes-long",
        ] {
            assert!(!lengths.may_hold(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn names_seen_before_are_the_names_parsed_again() {
        // More distinct names than a thread keeps, twice over, in two spellings: the kept ones,
        // the replaced ones and the ones never kept all read as `http` parses them.
        for round in 0..2 {
            for i in 0..3 * super::RECENT_NAMES {
                for spelling in [format!("x-name-{i}"), format!("X-Name-{i}")] {
                    assert_eq!(
                        header_name(spelling.as_bytes()).ok(),
                        HeaderName::from_bytes(spelling.as_bytes()).ok(),
                        "{spelling} (round {round})"
                    );
                }
            }
        }
        assert_eq!(
            header_name(b"x-name-1").unwrap().as_str(),
            "x-name-1",
            "a kept name is not taken for another that starts the same"
        );
        assert!(header_name(b"x-name-1 ").is_err());
        let long = format!("x-{}", "long-".repeat(20));
        for _ in 0..2 {
            assert_eq!(
                header_name(long.as_bytes()).ok(),
                HeaderName::from_bytes(long.as_bytes()).ok()
            );
        }
    }

    #[test]
    fn every_spelling_gives_what_http_parses() {
        let names = [
            "host",
            "user-agent",
            "accept",
            "accept-encoding",
            "accept-language",
            "authorization",
            "cookie",
            "content-type",
            "content-length",
            "connection",
            "transfer-encoding",
            "date",
            "server",
            "cache-control",
            "content-encoding",
            "etag",
            "last-modified",
            "location",
            "set-cookie",
            "vary",
            "x-request-id",
            "X-Custom-Thing",
        ];
        for name in names {
            let title: String = name
                .split('-')
                .map(|word| word[..1].to_uppercase() + &word[1..])
                .collect::<Vec<_>>()
                .join("-");
            for spelling in [name.to_owned(), title, name.to_uppercase()] {
                assert_eq!(
                    header_name(spelling.as_bytes()).ok(),
                    HeaderName::from_bytes(spelling.as_bytes()).ok(),
                    "{spelling}"
                );
            }
        }
        assert_eq!(header_name(b"ETag").ok(), Some(http::header::ETAG));
        for bad in [&b""[..], b"bad name", b"a:b", b"\xff"] {
            assert!(header_name(bad).is_err(), "{bad:?}");
        }
    }
}
