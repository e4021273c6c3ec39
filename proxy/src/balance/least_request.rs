//! Least request: power of two choices on in-flight requests per unit of weight.
//!
//! Checking every endpoint would herd all proxies onto the same idle one; two random choices
//! give nearly the same balance with no coordination (Mitzenmacher), as Envoy and Linkerd do.

use super::{Target, two_choices};

pub fn pick<T: Target>(targets: &[T]) -> usize {
    let (a, b) = two_choices(targets.len());
    if load(&targets[a]) <= load(&targets[b]) {
        a
    } else {
        b
    }
}

fn load<T: Target>(t: &T) -> f64 {
    f64::from(t.in_flight() + 1) / f64::from(t.weight().max(1))
}

#[cfg(test)]
mod tests {
    use super::super::Balancer;
    use super::super::test_support::{FakeTarget, histogram};
    use crate::config::LbPolicy;

    #[test]
    fn prefers_the_idle_endpoint() {
        let targets = [FakeTarget::new("a", 1), FakeTarget::new("b", 1)];
        targets[0].in_flight.set(10);
        let b = Balancer::new(LbPolicy::LeastRequest, &targets);
        assert_eq!(histogram(&b, &targets, 100), vec![0, 100]);
    }

    #[test]
    fn busy_endpoints_still_share_among_three() {
        let targets = [
            FakeTarget::new("a", 1),
            FakeTarget::new("b", 1),
            FakeTarget::new("c", 1),
        ];
        targets[0].in_flight.set(50);
        let b = Balancer::new(LbPolicy::LeastRequest, &targets);
        let counts = histogram(&b, &targets, 3000);
        assert!(
            counts[0] == 0 && counts[1] > 1000 && counts[2] > 1000,
            "{counts:?}"
        );
    }
}
