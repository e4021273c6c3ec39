//! Weighted random choice.

#[derive(Debug)]
pub struct Random {
    /// Running sums of the weights; empty when all weights are equal.
    cumulative: Vec<u64>,
    len: usize,
}

impl Random {
    pub fn new(weights: &[u32]) -> Self {
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = if uniform {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |sum, &w| {
                    *sum += u64::from(w);
                    Some(*sum)
                })
                .collect()
        };
        Self {
            cumulative,
            len: weights.len(),
        }
    }

    pub fn pick(&self) -> usize {
        match self.cumulative.last() {
            None => fastrand::usize(..self.len.max(1)),
            Some(&total) => {
                let point = fastrand::u64(..total);
                self.cumulative.partition_point(|&sum| sum <= point)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_weights() {
        let r = Random::new(&[1, 3]);
        let mut counts = [0usize; 2];
        for _ in 0..40_000 {
            counts[r.pick()] += 1;
        }
        let share = counts[1] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "weight 3 of 4 got {share}");
    }

    #[test]
    fn uniform_covers_everyone() {
        let r = Random::new(&[1, 1, 1, 1]);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[r.pick()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
