//! Query parameters and cookies, read the way browsers and servers write them, so plugins that
//! route or decide by `?user=` or a `session` cookie need not parse them by hand.

/// The first raw value of `name` in a query string (`a=1&b=2`, without the `?`); a bare `flag`
/// has the value "". Not percent-decoded: see [`decode_component`].
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Decodes a query component: `%XX` escapes and `+` as a space (HTML forms). Escapes that are
/// not two hex digits stay as they are; bytes that do not form UTF-8 become U+FFFD.
pub fn decode_component(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The value of cookie `name` in `Cookie` header values (`a=1; b=2`, possibly several
/// headers), the first one sent; surrounding double quotes are removed.
pub fn cookie<'c>(headers: impl IntoIterator<Item = &'c str>, name: &str) -> Option<&'c str> {
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| {
                let value = value.trim();
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let query = "user=42&flag&name=J%C3%BCrgen+M&empty=";
        assert_eq!(query_param(query, "user"), Some("42"));
        assert_eq!(query_param(query, "flag"), Some(""));
        assert_eq!(query_param(query, "empty"), Some(""));
        assert_eq!(query_param(query, "nope"), None);
        let name = query_param(query, "name").map(decode_component);
        assert_eq!(name.as_deref(), Some("Jürgen M"));
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz%4"), "%zz%4");
        assert_eq!(decode_component("a%2Fb"), "a/b");
    }

    #[test]
    fn cookies() {
        let headers = ["theme=dark; session=abc123", "ab=\"v2\""];
        assert_eq!(cookie(headers, "session"), Some("abc123"));
        assert_eq!(cookie(headers, "theme"), Some("dark"));
        assert_eq!(cookie(headers, "ab"), Some("v2"));
        assert_eq!(cookie(headers, "sess"), None);
        assert_eq!(cookie(["=x; a"], "a"), None);
    }
}
