//! What plugins pass each other through one request (`context.set`, `context.get`), with the
//! route a plugin named (`req.set_route`, the [`ROUTE_CONTEXT_KEY`] entry) kept apart: the proxy
//! reads the route for its metrics, log and route plans, and a routing plugin names one on every
//! request. Kept apart and shared, a route costs no allocation where a map entry cost three
//! (the key, the value and the table).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::remembered::Remembered;
use crate::telemetry::ROUTE_CONTEXT_KEY;

/// One request's context.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The route a plugin named, when it is text (any other value is kept in `entries`).
    route: Option<Arc<str>>,
    /// Every other entry, by key. Fx-hashed: SipHash took 0.4k instructions a lookup here, and
    /// the keys come from the plugins, which the operator chose.
    entries: FxHashMap<String, Vec<u8>>,
}

impl RequestContext {
    /// The value set under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        if key == ROUTE_CONTEXT_KEY
            && let Some(route) = &self.route
        {
            return Some(route.as_bytes());
        }
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Sets `key` to `value`; a route is taken from `routes`, the names this instance set
    /// before, when it is one of them.
    pub fn set(&mut self, key: &str, value: &[u8], routes: &mut RouteNames) {
        if key == ROUTE_CONTEXT_KEY {
            if let Ok(route) = super::text::utf8(value) {
                self.route = routes.get_or_make(value, || Some(Arc::from(route)));
                if !self.entries.is_empty() {
                    self.entries.remove(key);
                }
                return;
            }
            self.route = None;
        }
        self.entries.insert(key.to_owned(), value.to_vec());
    }

    /// Sets `key` to `value` where both are owned already (never the route: proxy-wasm's
    /// properties, which have keys of their own).
    pub fn insert(&mut self, key: String, value: Vec<u8>) {
        if key == ROUTE_CONTEXT_KEY {
            let mut routes = new_route_names();
            return self.set(&key, &value, &mut routes);
        }
        self.entries.insert(key, value);
    }

    /// The route a plugin named, if it is text.
    pub fn route(&self) -> Option<&str> {
        match &self.route {
            Some(route) => Some(route),
            None => super::text::utf8(self.entries.get(ROUTE_CONTEXT_KEY)?).ok(),
        }
    }
}

/// The route names an instance set lately, shared by the requests that name them.
pub type RouteNames = Remembered<Arc<str>>;

/// Route names remembered per instance (a linear scan: keep it short); past this, a new name is
/// allocated for its request alone.
const MAX_ROUTE_NAMES: usize = 16;

/// An instance's route names, none yet.
pub fn new_route_names() -> RouteNames {
    Remembered::new(MAX_ROUTE_NAMES, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_reads_back_as_any_entry_does() {
        let mut routes = new_route_names();
        let mut context = RequestContext::default();
        assert_eq!(context.route(), None);
        context.set("auth.user", b"alice", &mut routes);
        context.set(ROUTE_CONTEXT_KEY, b"api", &mut routes);
        assert_eq!(context.get(ROUTE_CONTEXT_KEY), Some(&b"api"[..]));
        assert_eq!(context.route(), Some("api"));
        assert_eq!(context.get("auth.user"), Some(&b"alice"[..]));

        // A second request naming the same route shares its name.
        let mut next = RequestContext::default();
        next.set(ROUTE_CONTEXT_KEY, b"api", &mut routes);
        assert!(Arc::ptr_eq(
            context.route.as_ref().unwrap(),
            next.route.as_ref().unwrap()
        ));

        // A value that is not text is kept as it is, and is no route; text replaces it.
        context.set(ROUTE_CONTEXT_KEY, b"\xff", &mut routes);
        assert_eq!(context.get(ROUTE_CONTEXT_KEY), Some(&b"\xff"[..]));
        assert_eq!(context.route(), None);
        context.set(ROUTE_CONTEXT_KEY, b"web", &mut routes);
        assert_eq!(context.get(ROUTE_CONTEXT_KEY), Some(&b"web"[..]));
        assert_eq!(context.route(), Some("web"));
        context.insert(ROUTE_CONTEXT_KEY.to_owned(), b"owned".to_vec());
        assert_eq!(context.route(), Some("owned"));
    }

    #[test]
    fn many_route_names_are_each_still_what_was_set() {
        let mut routes = new_route_names();
        for i in 0..3 * MAX_ROUTE_NAMES {
            let name = format!("route-{i}");
            let mut context = RequestContext::default();
            context.set(ROUTE_CONTEXT_KEY, name.as_bytes(), &mut routes);
            assert_eq!(context.route(), Some(name.as_str()));
        }
        assert!(routes.get_or_make(b"route-0", || None).is_some(), "kept");
        assert!(
            routes.get_or_make(b"route-47", || None).is_none(),
            "not kept past the cap"
        );
    }
}
