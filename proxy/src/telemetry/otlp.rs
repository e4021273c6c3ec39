//! Span export over OTLP/HTTP (protobuf), the format Jaeger, Tempo and the OpenTelemetry
//! collector ingest. Spans go through a bounded queue to one task that batches them and posts
//! each batch; a full queue drops spans (counted) rather than slowing requests down.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::TracingConfig;

/// How long one export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands finished spans to the export task.
#[derive(Debug)]
pub struct SpanExporter {
    queue: mpsc::Sender<Span>,
}

impl SpanExporter {
    /// Starts the export task for `config`; it ends, after a last flush, when the exporter is
    /// dropped (a reload builds a new one).
    pub fn start(config: &TracingConfig) -> Self {
        let (queue, spans) = mpsc::channel(config.max_queue);
        let task = ExportTask {
            endpoint: config.otlp_endpoint.clone(),
            resource: resource(&config.service_name),
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
        };
        tokio::spawn(task.run(spans));
        Self { queue }
    }

    /// Queues a span; drops it when the queue is full.
    pub fn export(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            metrics::counter!("switchyard_trace_spans_dropped_total").increment(1);
        }
    }
}

struct ExportTask {
    endpoint: Uri,
    resource: Resource,
    batch_size: usize,
    flush_interval: Duration,
}

impl ExportTask {
    async fn run(self, mut spans: mpsc::Receiver<Span>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= self.batch_size {
                            self.flush(&mut batch).await;
                        }
                    }
                    None => {
                        self.flush(&mut batch).await;
                        return;
                    }
                },
                _ = tick.tick() => self.flush(&mut batch).await,
            }
        }
    }

    async fn flush(&self, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "switchyard".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = Bytes::from(request.encode_to_vec());
        match tokio::time::timeout(EXPORT_TIMEOUT, post(&self.endpoint, body)).await {
            Ok(Ok(())) => {
                metrics::counter!("switchyard_trace_spans_exported_total").increment(count);
            }
            Ok(Err(e)) => {
                warn!(endpoint = %self.endpoint, error = %e, spans = count, "span export failed");
                metrics::counter!("switchyard_trace_export_errors_total").increment(1);
            }
            Err(_) => {
                warn!(endpoint = %self.endpoint, spans = count, "span export timed out");
                metrics::counter!("switchyard_trace_export_errors_total").increment(1);
            }
        }
    }
}

/// One POST of a protobuf batch on a fresh connection (batches are at most one per flush).
async fn post(endpoint: &Uri, body: Bytes) -> Result<(), String> {
    let host = endpoint.host().ok_or("the endpoint has no host")?;
    let port = endpoint.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let authority = endpoint
        .authority()
        .map_or_else(|| host.to_owned(), |a| a.as_str().to_owned());
    let request = Request::post(endpoint.path())
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() {
        debug!(%status, "spans exported");
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![
            string_attribute("service.name", service_name),
            string_attribute("telemetry.sdk.name", "switchyard"),
        ],
        ..Default::default()
    }
}

/// A string attribute.
pub fn string_attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
