//! The core's per-request work without plugins: picking an endpoint with each load-balancing
//! policy (10 endpoints); rewriting a typical request head as the proxy does before forwarding
//! (request id, hop-by-hop headers, forwarding headers, upstream target); and the HTTP/1.1 codec
//! the proxy runs twice per request, hyper's, parsing a request head and writing a response as
//! the downstream server, and writing a request and parsing a response as the upstream client,
//! over an in-memory pipe (no sockets), so what it measures is the codec and its dispatch.
//!
//! Run with `cargo bench -p switchyard --bench hot_path`.

use std::net::IpAddr;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Version};
use switchyard::balance::{Balancer, Target, hash_bytes};
use switchyard::config::LbPolicy;
use switchyard::forwarding;
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
    let client = forwarding::ClientAddress::of(IpAddr::from([198, 51, 100, 7]));
    c.bench_function("request head rewrite (8 headers)", |b| {
        b.iter_batched(
            request,
            |mut req| {
                let may_hold = forwarding::MayHold::of(req.headers());
                let mut added = forwarding::AddedFields::default();
                let id = added.request_id(req.headers_mut(), may_hold);
                headers::strip_hop_by_hop(req.headers_mut(), false);
                let version = Version::HTTP_11;
                added.forward(req.headers_mut(), may_hold, &client, "http", version);
                let target = headers::set_upstream_target(&mut req, false);
                (req, added, id, target.is_ok())
            },
            BatchSize::SmallInput,
        );
    });
}

/// The request head a client sends in the codec benches (the 8 headers of [`request`]).
const RAW_REQUEST: &[u8] = b"GET /v1/users/42?fields=name HTTP/1.1\r\nhost: api.example.com\r\n\
user-agent: curl/8.5.0\r\naccept: application/json\r\naccept-encoding: gzip, br\r\n\
connection: keep-alive\r\nx-forwarded-for: 203.0.113.9\r\nauthorization: Bearer abc.def.ghi\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
/// The body both sides answer with: the size of the load benchmark's.
const BODY: &[u8] = b"hello from the origin, a small answer like most API responses\n";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Reads one response to `RAW_REQUEST` from `stream`: up to the end of its head, then its body,
/// whose length is known. Returns the bytes read.
async fn read_response(stream: &mut tokio::io::DuplexStream, buf: &mut Vec<u8>) -> usize {
    use tokio::io::AsyncReadExt as _;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
            && buf.len() >= end + 4 + BODY.len()
        {
            return buf.len();
        }
        if stream.read_buf(buf).await.unwrap_or(0) == 0 {
            panic!("the server closed the connection");
        }
    }
}

fn head_parse(c: &mut Criterion) {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut group = c.benchmark_group("http/1.1 codec per request (in-memory pipe)");
    let rt = runtime();
    // Downstream: hyper's server parses the request head, calls the service, writes the answer.
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    rt.spawn(async move {
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                bytes::Bytes::from_static(BODY),
            )))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), service)
            .await;
    });
    let mut buf = Vec::with_capacity(4096);
    group.bench_function("server: parse request head, write response", |b| {
        b.iter(|| {
            rt.block_on(async {
                let _ = client.write_all(RAW_REQUEST).await;
                read_response(&mut client, &mut buf).await
            })
        });
    });

    // Upstream: hyper's client writes the request head and parses the response; the peer is a
    // loop that answers each request head with fixed bytes.
    let (client_io, mut origin) = tokio::io::duplex(64 * 1024);
    rt.spawn(async move {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nserver: bench\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            BODY.len()
        );
        let answer = [answer.as_bytes(), BODY].concat();
        let mut seen = Vec::with_capacity(4096);
        loop {
            if origin.read_buf(&mut seen).await.unwrap_or(0) == 0 {
                return;
            }
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                if origin.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut sender = rt.block_on(async {
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(client_io))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(connection);
        sender
    });
    group.bench_function("client: write request head, parse response", |b| {
        b.iter_batched(
            || {
                let mut req = request();
                let _ = headers::set_upstream_target(&mut req, false);
                req.map(|()| Full::new(bytes::Bytes::new()))
            },
            |req| {
                rt.block_on(async {
                    let _ = sender.ready().await;
                    let response = sender
                        .send_request(req)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let body = response.into_body().collect().await;
                    body.map(|b| b.to_bytes().len()).unwrap_or(0)
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, load_balancing, head_rewrite, head_parse);
criterion_main!(benches);
