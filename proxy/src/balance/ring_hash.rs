//! Consistent hashing (Ketama-style ring): the same key goes to the same endpoint, and adding or
//! removing one endpoint moves only about 1/n of the keys.

use super::{Target, hash_bytes};

/// Points on the ring per unit of weight.
const POINTS_PER_WEIGHT: usize = 128;
/// Cap on the whole ring, so huge clusters stay cheap to rebuild.
const MAX_POINTS: usize = 64 * 1024;

#[derive(Debug)]
pub struct Ring {
    /// (position, target index), sorted by position.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new<T: Target>(targets: &[T]) -> Self {
        let total_weight: usize = targets.iter().map(|t| t.weight() as usize).sum();
        let per_weight = (MAX_POINTS / total_weight.max(1)).clamp(1, POINTS_PER_WEIGHT);
        let mut points = Vec::with_capacity(total_weight * per_weight);
        for (index, t) in targets.iter().enumerate() {
            let id = t.hash_identity();
            for replica in 0..t.weight() as usize * per_weight {
                points.push((hash_bytes(format!("{id}#{replica}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    pub fn pick(&self, key: u64) -> usize {
        let at = self.points.partition_point(|&(pos, _)| pos < key);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map_or(0, |&(_, index)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::FakeTarget;
    use super::*;

    fn targets(names: &[&str]) -> Vec<FakeTarget> {
        names.iter().map(|n| FakeTarget::new(n, 1)).collect()
    }

    /// What every proxy, before and after a restart, must pick; computed independently of this
    /// code (FNV-1a + murmur3 finalizer, 128 points per endpoint, first point at or after the key).
    #[test]
    fn a_key_maps_to_the_same_endpoint_on_every_proxy_and_in_any_order() {
        let names = ["a:1", "b:1", "c:1"];
        let expected = ["a:1", "a:1", "b:1", "a:1", "c:1", "b:1", "c:1", "a:1"];
        let forward = targets(&names);
        let mut reversed = targets(&names);
        reversed.reverse();
        let (r1, r2) = (Ring::new(&forward), Ring::new(&reversed));
        for (user, want) in expected.iter().enumerate() {
            let key = hash_bytes(format!("user-{user}").as_bytes());
            assert_eq!(forward[r1.pick(key)].name, *want, "user-{user}");
            assert_eq!(
                reversed[r2.pick(key)].name,
                *want,
                "user-{user}, targets reversed"
            );
        }
    }

    #[test]
    fn spreads_keys_and_moves_few_on_change() {
        let before = targets(&["a:1", "b:1", "c:1", "d:1"]);
        let after = targets(&["a:1", "b:1", "c:1", "d:1", "e:1"]);
        let (r1, r2) = (Ring::new(&before), Ring::new(&after));
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for user in 0..10_000 {
            let key = hash_bytes(format!("user-{user}").as_bytes());
            let (x, y) = (r1.pick(key), r2.pick(key));
            counts[x] += 1;
            if before[x].name != after[y].name {
                moved += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 1800), "uneven ring: {counts:?}");
        assert!((1000..3000).contains(&moved), "{moved} of 10000 keys moved");
    }
}
