//! The core's per-request work without plugins: picking an endpoint with each load-balancing
//! policy (10 endpoints), and rewriting a typical request head as the proxy does before
//! forwarding (request id, hop-by-hop headers, forwarding headers, upstream target).
//!
//! Run with `cargo bench -p switchyard --bench hot_path`.

use std::net::IpAddr;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Version};
use switchyard::balance::{Balancer, Target, hash_bytes};
use switchyard::config::LbPolicy;
use switchyard::headers;

/// An endpoint as the balancers see it.
struct Endpoint {
    weight: u32,
    in_flight: u32,
    address: String,
}

impl Target for Endpoint {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> u32 {
        self.in_flight
    }
    fn latency_estimate(&self, _now: Instant) -> f64 {
        f64::from(self.in_flight) * 1000.0 + 250_000.0
    }
    fn hash_identity(&self) -> String {
        self.address.clone()
    }
}

fn endpoints() -> Vec<Endpoint> {
    (0..10)
        .map(|i| Endpoint {
            weight: 1 + i % 3,
            in_flight: i * 7 % 5,
            address: format!("10.0.0.{i}:8080"),
        })
        .collect()
}

fn load_balancing(c: &mut Criterion) {
    let targets = endpoints();
    let mut group = c.benchmark_group("lb pick (10 endpoints)");
    for (name, policy) in [
        ("round_robin", LbPolicy::RoundRobin),
        ("least_request", LbPolicy::LeastRequest),
        ("ewma", LbPolicy::Ewma),
        ("random", LbPolicy::Random),
        ("ring_hash", LbPolicy::RingHash),
    ] {
        let balancer = Balancer::new(policy, &targets);
        let mut key = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                key = key.wrapping_add(1);
                let hash = (policy == LbPolicy::RingHash).then(|| hash_bytes(&key.to_le_bytes()));
                balancer.pick(&targets, hash)
            });
        });
    }
    group.finish();
}

fn request() -> Request<()> {
    let mut req = Request::get("http://api.example.com/v1/users/42?fields=name")
        .version(Version::HTTP_11)
        .body(())
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.9"),
        ("authorization", "Bearer abc.def.ghi"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        req.headers_mut()
            .insert(name, value.parse().unwrap_or_else(|e| panic!("{e}")));
    }
    req
}

fn head_rewrite(c: &mut Criterion) {
    let client: IpAddr = [198, 51, 100, 7].into();
    c.bench_function("request head rewrite (8 headers)", |b| {
        b.iter_batched(
            request,
            |mut req| {
                let id = headers::ensure_request_id(req.headers_mut());
                headers::strip_hop_by_hop(req.headers_mut(), false);
                headers::add_forwarding(req.headers_mut(), client, "http", Version::HTTP_11);
                let target = headers::set_upstream_target(&mut req, false);
                (req, id, target.is_ok())
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, load_balancing, head_rewrite);
criterion_main!(benches);
