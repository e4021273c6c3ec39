//! Values an instance made from a plugin's text — header names, header values, route names —
//! kept so the next request that passes the same text shares them instead of parsing and
//! allocating again. A linear scan over a few entries: the first ones made are kept, so text
//! that changes on every request costs one scan, never a churn.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

/// A value's text, as a plugin passes it.
pub trait Spelled {
    fn spelling(&self) -> &[u8];
}

impl Spelled for HeaderName {
    fn spelling(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Spelled for HeaderValue {
    fn spelling(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Spelled for Arc<str> {
    fn spelling(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Up to `count` values, each of text up to `max_bytes` long.
#[derive(Debug)]
pub struct Remembered<T> {
    values: Vec<T>,
    count: usize,
    max_bytes: usize,
}

impl<T: Spelled + Clone> Remembered<T> {
    pub const fn new(count: usize, max_bytes: usize) -> Self {
        Self {
            values: Vec::new(),
            count,
            max_bytes,
        }
    }

    /// The value made before for `text`, if one was kept: borrowed, not cloned.
    pub fn known(&self, text: &[u8]) -> Option<&T> {
        self.values.iter().find(|v| v.spelling() == text)
    }

    /// The value spelled `text`: one made before, else `make`'s, kept when there is room and it
    /// spells `text` as given (a header name made from upper case is not, and is looked up by
    /// its lower-case spelling).
    pub fn get_or_make(&mut self, text: &[u8], make: impl FnOnce() -> Option<T>) -> Option<T> {
        if let Some(known) = self.known(text) {
            return Some(known.clone());
        }
        let made = make()?;
        if self.values.len() < self.count && text.len() <= self.max_bytes && made.spelling() == text
        {
            self.values.push(made.clone());
        }
        Some(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_what_was_made_kept_or_not() {
        let mut names: Remembered<HeaderName> = Remembered::new(2, usize::MAX);
        let parse = |text: &str| HeaderName::from_bytes(text.as_bytes()).ok();
        for text in ["x-a", "X-B", "x-c", "x-d", "x-a", "X-B", "bad name"] {
            let got = names.get_or_make(text.as_bytes(), || parse(text));
            assert_eq!(got, parse(text), "{text}");
        }
        // The first two kept in their own spelling: x-a, then x-c (X-B is not spelled as given).
        let kept: Vec<&str> = names.values.iter().map(HeaderName::as_str).collect();
        assert_eq!(kept, ["x-a", "x-c"]);

        let mut routes: Remembered<Arc<str>> = Remembered::new(4, 3);
        let a = routes
            .get_or_make(b"api", || Some(Arc::from("api")))
            .unwrap();
        let again = routes.get_or_make(b"api", || None).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "shared, not made again");
        let long = routes.get_or_make(b"longer", || Some(Arc::from("longer")));
        assert_eq!(long.as_deref(), Some("longer"));
        assert_eq!(routes.values.len(), 1, "past max_bytes, not kept");
    }
}
