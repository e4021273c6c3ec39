//! A real gRPC stack for the integration tests: a tonic server of the `switchyard.test.Echo`
//! service whose failures and delays the test sets, that counts its calls and the calls its
//! client cancelled, beside the standard `grpc.health.v1.Health` service; and tonic clients.
#![allow(
    clippy::expect_used,
    reason = "test support: a setup that fails fails the test that asked for it"
)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, client and server.
pub mod pb {
    tonic::include_proto!("switchyard.test");
}

pub use pb::echo_client::EchoClient;
pub use pb::{EchoReply, EchoRequest};
pub use tonic;
pub use tonic::Code;
pub use tonic::transport::Channel;

/// How the test server behaves.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// The first this many calls fail with `UNAVAILABLE` (a trailers-only response).
    pub fail_first: u32,
    /// Each call waits this long before answering.
    pub delay: Duration,
}

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    calls: AtomicU32,
    cancelled: AtomicU32,
    /// The `grpc-timeout` of the last call, as it arrived.
    last_timeout: Mutex<Option<String>>,
}

/// The Echo service with its behavior and what it saw.
#[derive(Debug)]
struct EchoService {
    behavior: Behavior,
    seen: Arc<Seen>,
}

/// Counts a call as cancelled when the handler is dropped before it finishes.
struct CancelGuard {
    seen: Arc<Seen>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.seen.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl EchoService {
    /// Counts the call and applies the behavior; an error fails the call.
    async fn start_call<T>(&self, _request: &Request<T>) -> Result<(), Status> {
        let call = self.seen.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.behavior.fail_first {
            return Err(Status::unavailable(format!("call {call} fails on purpose")));
        }
        if !self.behavior.delay.is_zero() {
            let mut guard = CancelGuard {
                seen: Arc::clone(&self.seen),
                finished: false,
            };
            tokio::time::sleep(self.behavior.delay).await;
            guard.finished = true;
        }
        Ok(())
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl pb::echo_server::Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.start_call(&request).await?;
        Ok(Response::new(EchoReply {
            message: request.into_inner().message,
            received: 1,
        }))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = request.into_inner();
        let mut message = String::new();
        let mut received = 0;
        while let Some(item) = stream.message().await? {
            message.push_str(&item.message);
            received += 1;
        }
        // Fail only after the whole stream arrived, so a retry must replay all of it.
        self.start_call(&Request::new(())).await?;
        Ok(Response::new(EchoReply { message, received }))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        self.start_call(&request).await?;
        let request = request.into_inner();
        let replies = (0..request.count).map(move |i| {
            Ok(EchoReply {
                message: format!("{} {i}", request.message),
                received: 1,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }
}

/// Serves `routes` over h2c with hyper directly rather than tonic's own server, which enforces
/// a call's `grpc-timeout` itself (answering CANCELLED when its timer wins the race with the
/// proxy's): here the header is recorded for Echo calls and removed, so only the proxy enforces
/// the deadline, and the server sees it only as a cancellation.
async fn serve(listener: tokio::net::TcpListener, routes: tonic::service::Routes, seen: Arc<Seen>) {
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (routes, seen, http) = (routes.clone(), Arc::clone(&seen), http.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    let timeout = req.headers_mut().remove("grpc-timeout");
                    if req.uri().path().starts_with("/switchyard.test.Echo/") {
                        *seen
                            .last_timeout
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            timeout.and_then(|v| v.to_str().ok().map(str::to_owned));
                    }
                    let mut routes = routes.clone();
                    async move { tonic::codegen::Service::call(&mut routes, req).await }
                });
            let _ = http
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A running test server (stopped on drop).
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    health: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves Echo and Health (both SERVING) on 127.0.0.1:0, over h2c.
    pub async fn start(behavior: Behavior) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gRPC test server");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Seen::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::echo_server::EchoServer<EchoService>>()
            .await;
        let echo = pb::echo_server::EchoServer::new(EchoService {
            behavior,
            seen: Arc::clone(&seen),
        });
        let routes = tonic::service::Routes::new(health_service)
            .add_service(echo)
            .prepare();
        let task = tokio::spawn(serve(listener, routes, Arc::clone(&seen)));
        Self {
            addr,
            seen,
            health,
            task,
        }
    }

    /// Calls that reached a handler.
    pub fn calls(&self) -> u32 {
        self.seen.calls.load(Ordering::SeqCst)
    }

    /// Calls whose client went away before the handler finished.
    pub fn cancelled(&self) -> u32 {
        self.seen.cancelled.load(Ordering::SeqCst)
    }

    /// The `grpc-timeout` header of the last call, as the server got it.
    pub fn last_timeout(&self) -> Option<String> {
        self.seen
            .last_timeout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets the health of the whole server (service "") and of the Echo service.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        self.health
            .set_service_status("switchyard.test.Echo", status)
            .await;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client of Echo at `addr` (plain HTTP/2, e.g. the proxy's listener).
pub async fn client(addr: SocketAddr) -> EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connect to the gRPC endpoint");
    EchoClient::new(channel)
}

/// `items` as a request stream, for client-streaming calls.
pub fn stream_of(items: Vec<EchoRequest>) -> impl Stream<Item = EchoRequest> + Send + 'static {
    tokio_stream::iter(items)
}
