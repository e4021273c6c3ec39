//! Header maps the engine has finished with, kept per thread for the next heads it parses. A
//! map is two allocations (its index and its entries); a request that passes through the engine
//! both ways parses two heads and finishes with two, so in steady state each head's map is one
//! the engine wrote out before, cleared, and no map is allocated or freed.

use std::cell::RefCell;

use http::HeaderMap;

/// How many cleared maps a thread keeps.
const KEPT: usize = 8;
/// The most fields a kept map has room for: a larger one (an unusual head) is freed, so a thread
/// holds at most a few KiB of spare maps.
const MOST_FIELDS: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`: a spare one if the thread has it.
pub(crate) fn header_map(fields: usize) -> HeaderMap {
    let mut map = SPARE.with_borrow_mut(Vec::pop).unwrap_or_default();
    map.reserve(fields);
    map
}

/// Keeps `map` (cleared) for a later head, unless the thread has enough or it is large.
pub(crate) fn give_back(mut map: HeaderMap) {
    if map.capacity() > MOST_FIELDS {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use http::header::{HOST, HeaderValue};

    use super::*;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = header_map(4);
        map.insert(HOST, HeaderValue::from_static("a"));
        let room = map.capacity();
        give_back(map);
        let again = header_map(2);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn large_maps_and_maps_past_the_limit_are_freed() {
        SPARE.with_borrow_mut(Vec::clear);
        give_back(HeaderMap::with_capacity(MOST_FIELDS * 2));
        assert_eq!(SPARE.with_borrow(Vec::len), 0);
        for _ in 0..KEPT + 3 {
            give_back(HeaderMap::with_capacity(4));
        }
        assert_eq!(SPARE.with_borrow(Vec::len), KEPT);
    }
}
