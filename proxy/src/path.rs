//! Request path normalization, before any plugin sees the path: a rule on prefix `/api/` must not
//! be bypassed by `/api/../secret` or `/%61pi/`, which an upstream that cleans paths would serve as
//! `/secret` and `/api/`. As Envoy's `normalize_path` and Istio's default: percent-encoded
//! unreserved characters are decoded and the rest upper-cased (RFC 3986 §6.2.2.1-2), dot segments
//! are removed (§5.2.4), and, by option, runs of slashes are merged and encoded slashes
//! (`%2F`, `%5C`) are kept, refused or decoded. The query is never touched.

use std::borrow::Cow;

use http::Uri;
use http::uri::PathAndQuery;

/// What to do with `%2F` and `%5C` in a path: many servers decode them into separators, so
/// `/api%2F..%2Fsecret` may be `/secret` to the upstream though it is one segment here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Forwarded as they are (upper-cased), as Envoy does by default.
    #[default]
    Keep,
    /// The request gets 400.
    Reject,
    /// Decoded to `/` and `\` before dot segments are removed.
    Decode,
}

/// A listener's path normalization settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PathNormalization {
    /// Off: paths are forwarded exactly as received.
    pub enabled: bool,
    /// `//a///b` becomes `/a/b`.
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        Self {
            enabled: true,
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path holds an encoded slash (%2F or %5C), which this listener refuses")]
    EscapedSlash,
    #[error("the path's normal form is not a valid request target")]
    Unrepresentable,
}

impl PathNormalization {
    /// The normalized form of `path` (an origin-form path without its query, starting with
    /// `/`), borrowed when nothing changes, which is the common case and costs one scan.
    pub fn normalize<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, PathError> {
        if !self.enabled || !path.starts_with('/') || self.is_normal(path) {
            return Ok(Cow::Borrowed(path));
        }
        let decoded = self.decode(path)?;
        let merged = if self.merge_slashes {
            merge_slashes(&decoded)
        } else {
            decoded
        };
        Ok(Cow::Owned(remove_dot_segments(&merged)))
    }

    /// The request target with its path normalized, or `None` when it is already normal (or not
    /// an origin-form path: `*`, an authority).
    pub fn normalize_uri(&self, uri: &Uri) -> Result<Option<Uri>, PathError> {
        let Some(target) = uri.path_and_query() else {
            return Ok(None);
        };
        let Cow::Owned(path) = self.normalize(target.path())? else {
            return Ok(None);
        };
        let target = match target.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        // Never forward the path as it came when its normal form cannot be sent: that would be
        // the bypass this exists to stop.
        let target = PathAndQuery::try_from(target).map_err(|_| PathError::Unrepresentable)?;
        parts.path_and_query = Some(target);
        Uri::from_parts(parts)
            .map(Some)
            .map_err(|_| PathError::Unrepresentable)
    }

    /// Whether `path` has nothing to normalize: no `%`, no dot segment, no `//` when merging.
    fn is_normal(&self, path: &str) -> bool {
        let bytes = path.as_bytes();
        let mut previous = b'/';
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'%' => return false,
                b'.' if previous == b'/' => {
                    // "." or ".." as a whole segment.
                    let rest = &bytes[i..];
                    let segment = rest.split(|&c| c == b'/').next().unwrap_or(rest);
                    if segment == b"." || segment == b".." {
                        return false;
                    }
                }
                b'/' if previous == b'/' && i > 0 && self.merge_slashes => return false,
                _ => {}
            }
            previous = b;
        }
        true
    }

    /// Decodes percent-encoded unreserved characters, upper-cases the hex of the rest, and
    /// applies the encoded-slash setting. A `%` not followed by two hex digits becomes `%25`.
    fn decode(&self, path: &str) -> Result<String, PathError> {
        let bytes = path.as_bytes();
        let mut out = String::with_capacity(path.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let escaped = (b == b'%')
                .then(|| {
                    Some((
                        hex_value(*bytes.get(i + 1)?)?,
                        hex_value(*bytes.get(i + 2)?)?,
                    ))
                })
                .flatten();
            let Some((high, low)) = escaped else {
                // A `%` that starts no escape is escaped itself, so no later decoding (ours
                // again, or the upstream's) can read it with what follows as a new escape.
                if b == b'%' {
                    out.push_str("%25");
                    i += 1;
                    continue;
                }
                // Copy the character (whole, if it is multi-byte UTF-8).
                let len = utf8_len(b);
                out.push_str(&path[i..(i + len).min(path.len())]);
                i += len;
                continue;
            };
            let value = high << 4 | low;
            i += 3;
            match value {
                b'/' | b'\\' => match self.escaped_slashes {
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::Decode => out.push(char::from(value)),
                    EscapedSlashes::Keep => push_escape(&mut out, value),
                },
                _ if is_unreserved(value) => out.push(char::from(value)),
                _ => push_escape(&mut out, value),
            }
        }
        Ok(out)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_escape(out: &mut String, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(value >> 4)]));
    out.push(char::from(HEX[usize::from(value & 0xF)]));
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments go, `..` removes the segment before it
/// (never above the root), and a path ending in a dot segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => trailing_slash = last,
            ".." => {
                segments.pop();
                trailing_slash = last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(settings: PathNormalization, path: &str) -> Result<String, PathError> {
        settings.normalize(path).map(Cow::into_owned)
    }

    fn default(path: &str) -> String {
        normalized(PathNormalization::default(), path).expect("normalizes")
    }

    #[test]
    fn dot_segments_are_removed() {
        for (path, expected) in [
            ("/api/../secret", "/secret"),
            ("/api/./v1", "/api/v1"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/api/..", "/"),
            ("/api/v1/..", "/api/"),
            ("/api/.", "/api/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/", "/"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/.b", "/a/.b"),
            ("/a...", "/a..."),
        ] {
            assert_eq!(default(path), expected, "{path}");
        }
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_before_dot_segments_go() {
        assert_eq!(default("/%61pi/v1"), "/api/v1");
        assert_eq!(default("/api/%2e%2E/secret"), "/secret");
        assert_eq!(default("/a%7Eb"), "/a~b");
        // Reserved and other characters stay encoded, with upper-case hex.
        assert_eq!(default("/a%3fb%20c"), "/a%3Fb%20c");
        assert_eq!(default("/caf%c3%a9"), "/caf%C3%A9");
        // A stray % is escaped, so it cannot pair with what follows on a second decoding.
        assert_eq!(default("/100%/x%zz"), "/100%25/x%25zz");
        assert_eq!(default("/%%34%31"), "/%2541");
        assert_eq!(default("/é/../x"), "/x");
    }

    #[test]
    fn encoded_slashes_are_kept_refused_or_decoded() {
        let with = |escaped_slashes| PathNormalization {
            escaped_slashes,
            ..PathNormalization::default()
        };
        assert_eq!(
            normalized(with(EscapedSlashes::Keep), "/api%2f..%2fsecret").as_deref(),
            Ok("/api%2F..%2Fsecret")
        );
        assert_eq!(
            normalized(with(EscapedSlashes::Reject), "/api%2F..%2Fsecret"),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            normalized(with(EscapedSlashes::Decode), "/api/v1%2F..%2F..%2Fsecret").as_deref(),
            Ok("/secret")
        );
        assert_eq!(
            normalized(with(EscapedSlashes::Decode), "/a%5Cb").as_deref(),
            Ok("/a\\b")
        );
    }

    #[test]
    fn slashes_are_merged_only_when_asked() {
        assert_eq!(default("//api///v1"), "//api///v1");
        let merging = PathNormalization {
            merge_slashes: true,
            ..PathNormalization::default()
        };
        assert_eq!(
            normalized(merging, "//api///v1/").as_deref(),
            Ok("/api/v1/")
        );
        assert_eq!(normalized(merging, "/a//..//b").as_deref(), Ok("/b"));
    }

    #[test]
    fn normal_paths_are_borrowed_and_off_means_untouched() {
        let settings = PathNormalization::default();
        for path in ["/", "/api/v1/users", "/a.b/c.d", "/a/b..", "//x"] {
            assert!(
                matches!(settings.normalize(path), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
        let off = PathNormalization {
            enabled: false,
            ..PathNormalization::default()
        };
        assert_eq!(
            normalized(off, "/api/../secret").as_deref(),
            Ok("/api/../secret")
        );
    }

    #[test]
    fn a_uri_keeps_its_query_scheme_and_authority() {
        let settings = PathNormalization::default();
        let uri: Uri = "http://example.com/api/../secret?x=/../y"
            .parse()
            .expect("uri");
        let normalized = settings.normalize_uri(&uri).expect("ok").expect("changed");
        assert_eq!(normalized.to_string(), "http://example.com/secret?x=/../y");
        let origin: Uri = "/a/./b?q".parse().expect("uri");
        assert_eq!(
            settings
                .normalize_uri(&origin)
                .expect("ok")
                .expect("changed"),
            "/a/b?q"
        );
        let normal: Uri = "/a/b?q=..".parse().expect("uri");
        assert_eq!(settings.normalize_uri(&normal), Ok(None));
        let star: Uri = "*".parse().expect("uri");
        assert_eq!(settings.normalize_uri(&star), Ok(None));
    }

    /// The fuzz target's invariants (fuzz/fuzz_targets/path_normalize.rs) on stable: random
    /// paths from an alphabet rich in the characters that matter never panic, leave no dot
    /// segment, and normalize to a fixed point.
    #[test]
    fn random_paths_keep_the_invariants() {
        const ALPHABET: &[&str] = &[
            "/", "/", ".", ".", "%", "2", "e", "E", "f", "F", "5", "c", "a", "~", "é", "%2e",
            "%2F", "%5C", "%25", "..", "//", "\\", "x",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..20_000 {
            let len = rng.usize(0..16);
            let path: String = std::iter::once("/")
                .chain((0..len).map(|_| ALPHABET[rng.usize(..ALPHABET.len())]))
                .collect();
            for escaped_slashes in [
                EscapedSlashes::Keep,
                EscapedSlashes::Reject,
                EscapedSlashes::Decode,
            ] {
                for merge_slashes in [false, true] {
                    let settings = PathNormalization {
                        enabled: true,
                        merge_slashes,
                        escaped_slashes,
                    };
                    let Ok(once) = normalized(settings, &path) else {
                        continue;
                    };
                    assert!(once.starts_with('/'), "{path:?} -> {once:?}");
                    assert!(
                        !once.split('/').any(|s| s == "." || s == ".."),
                        "{path:?} -> {once:?}"
                    );
                    assert_eq!(
                        normalized(settings, &once).as_deref(),
                        Ok(once.as_str()),
                        "{path:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing_more() {
        let merging = PathNormalization {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Decode,
            ..PathNormalization::default()
        };
        for path in [
            "/a/b/../c/./d",
            "/%2e%2e/%2E/x//y/",
            "/a%2F%2e%2e%2Fb",
            "/%25%32%65",
            "/a/..%2F/",
            "/%%34%31/%2%2e",
        ] {
            let once = normalized(merging, path).expect("normalizes");
            let twice = normalized(merging, &once).expect("normalizes");
            assert_eq!(once, twice, "{path}");
        }
    }
}
