//! A Kubernetes API server for EndpointSlices, speaking the list and watch protocol as the real
//! one does (the bodies are shaped after recorded `kubectl get --raw` responses): a list answers
//! the current slices with a resourceVersion; a watch is a chunked stream of JSON lines the test
//! pushes events into, including the `410 Gone` a real server sends when a resourceVersion is too
//! old. A kubeconfig pointing at it is written for the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    list: Value,
    services: Value,
    /// Open watches: of Services (true) or of EndpointSlices (false).
    watches: Vec<(bool, mpsc::UnboundedSender<Bytes>)>,
    requests: Vec<String>,
    /// Service-account tokens a TokenReview vouches for, and whose they are.
    tokens: Vec<(String, String)>,
}

/// A running fake API server.
pub struct KubeApi {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    state: Arc<Mutex<State>>,
}

impl KubeApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            list: slice_list("1", &[]),
            services: service_list("1", &[]),
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        let kubeconfig = super::proxy::scratch_dir().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test-token\n"
            ),
        )
        .unwrap();
        Self {
            addr,
            kubeconfig,
            state,
        }
    }

    /// What the next list answers.
    pub fn set_list(&self, list: Value) {
        self.lock().list = list;
    }

    /// What the next list of Services answers.
    pub fn set_services(&self, list: Value) {
        self.lock().services = list;
    }

    /// Sends one watch event to every open EndpointSlice watch.
    pub fn send(&self, event: Value) {
        self.send_to(false, event);
    }

    /// Sends one watch event to every open Service watch.
    pub fn send_service(&self, event: Value) {
        self.send_to(true, event);
    }

    fn send_to(&self, services: bool, event: Value) {
        let line = Bytes::from(format!("{event}\n"));
        self.lock()
            .watches
            .retain(|(kind, w)| *kind != services || w.send(line.clone()).is_ok());
    }

    /// A TokenReview of `token` says it is service account `namespace:name`'s.
    pub fn allow_token(&self, token: &str, namespace: &str, name: &str) {
        self.lock().tokens.push((
            token.to_owned(),
            format!("system:serviceaccount:{namespace}:{name}"),
        ));
    }

    /// Every request so far, `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// How many EndpointSlice watches have been opened so far.
    pub fn watches_opened(&self) -> usize {
        self.slice_requests().filter(|r| is_watch(r)).count()
    }

    /// How many EndpointSlice lists have been answered so far.
    pub fn lists(&self) -> usize {
        self.slice_requests().filter(|r| !is_watch(r)).count()
    }

    fn slice_requests(&self) -> impl Iterator<Item = String> {
        self.requests()
            .into_iter()
            .filter(|r| r.contains("/endpointslices"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn is_watch(request: &str) -> bool {
    request.contains("watch=true") || request.contains("watch=1")
}

async fn answer(
    state: &Mutex<State>,
    req: Request<Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if req.uri().path() == "/apis/authentication.k8s.io/v1/tokenreviews" {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let review: Value = serde_json::from_slice(&body).unwrap();
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.requests.push(target);
        return Response::new(
            Full::new(Bytes::from(
                token_review(&state.tokens, &review).to_string(),
            ))
            .boxed(),
        );
    }
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.requests.push(target.clone());
    let path = req.uri().path();
    let services = path.starts_with("/api/v1/namespaces/") && path.ends_with("/services");
    if !services && !path.starts_with("/apis/discovery.k8s.io/v1/namespaces/") {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404});
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        return response;
    }
    if is_watch(&target) {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        state.watches.push((services, tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        let mut response = Response::new(StreamBody::new(stream).boxed());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let list = if services {
        &state.services
    } else {
        &state.list
    };
    let mut response = Response::new(Full::new(Bytes::from(list.to_string())).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A TokenReview answered as the API server answers it.
fn token_review(tokens: &[(String, String)], review: &Value) -> Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let status = match tokens.iter().find(|(t, _)| t == token) {
        Some((_, username)) => json!({
            "authenticated": true,
            "user": {
                "username": username,
                "uid": "4b1f0c5e-8a9d-4e2f-b3c7-1d6e9f0a2b3c",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
            },
            "audiences": ["https://kubernetes.default.svc.cluster.local"]
        }),
        None => {
            json!({"user": {}, "error": "[invalid bearer token, service account token has been invalidated]"})
        }
    };
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": review["spec"],
        "status": status
    })
}

/// One EndpointSlice of Service `orders` in `default`: endpoints `(ip, ready)` on named port
/// `http` = `port`, as the API server returns it.
pub fn slice(name: &str, resource_version: &str, port: u16, endpoints: &[(&str, bool)]) -> Value {
    json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "generateName": "orders-",
            "namespace": "default",
            "uid": format!("0b6b5ad2-7b3c-4d8e-9f10-{:012}", port),
            "resourceVersion": resource_version,
            "generation": 1,
            "creationTimestamp": "2026-11-20T09:14:03Z",
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": "orders"
            },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": "orders",
                "uid": "5f2c1f7e-1c55-4a43-a4b6-2f0e3e1f8a9d",
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(ip, ready)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("orders-{name}"), "uid": "9c1d8f3e-2b1a-4f6e-8d7c-6a5b4c3d2e1f"},
            "zone": "zone-a"
        })).collect::<Vec<_>>(),
        "ports": [{"name": "http", "protocol": "TCP", "port": port}]
    })
}

/// Service `name` in `default` with one cluster IP and port `http` (`port` → `target_port`).
pub fn service(
    name: &str,
    resource_version: &str,
    cluster_ip: &str,
    port: u16,
    target_port: u16,
) -> Value {
    json!({
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "5f2c1f7e-1c55-4a43-a4b6-2f0e3e1f8a9d",
            "resourceVersion": resource_version,
            "creationTimestamp": "2026-11-20T09:14:02Z",
            "labels": {"app": name}
        },
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": target_port}],
            "selector": {"app": name},
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    })
}

/// A ServiceList at `resource_version`.
pub fn service_list(resource_version: &str, items: &[Value]) -> Value {
    json!({
        "kind": "ServiceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": resource_version},
        "items": items
    })
}

/// An EndpointSliceList at `resource_version`.
pub fn slice_list(resource_version: &str, items: &[Value]) -> Value {
    json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "items": items
    })
}

/// A watch event: `ADDED`, `MODIFIED` or `DELETED`.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// What a real API server sends when a watch's resourceVersion has been compacted away.
pub fn gone(resource_version: &str) -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {resource_version} (1500)"),
            "reason": "Expired", "code": 410
        }
    })
}
