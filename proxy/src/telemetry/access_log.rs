//! The access log: one JSON object per request, to stdout or a file.
//!
//! Lines are formatted on the request's thread and written by a dedicated thread through a
//! bounded queue, so a slow disk never blocks a tokio worker; a full queue drops lines and
//! counts them (`switchyard_access_log_dropped_total`).

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tracing::warn;

use crate::config::{AccessLogConfig, AccessLogField, AccessLogTarget};

/// Lines waiting to be written before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where finished requests are logged.
#[derive(Debug)]
pub struct AccessLog {
    fields: Vec<AccessLogField>,
    lines: mpsc::SyncSender<String>,
}

/// One request as the access log sees it; `None` fields are written as `null`.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    pub time: String,
    pub listener: &'a str,
    pub peer: String,
    pub method: &'a str,
    pub authority: Option<&'a str>,
    pub path: Option<&'a str>,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub upstream: Option<String>,
    pub attempts: u32,
    pub destination: Option<&'a str>,
    pub route: Option<&'a str>,
    pub identity: Option<String>,
    pub request_id: Option<&'a str>,
    pub trace_id: Option<String>,
    pub plugins: Vec<String>,
    pub error: Option<&'a str>,
    pub retry_refused: Option<&'static str>,
    pub grpc_status: Option<u8>,
}

impl AccessLog {
    /// Opens the target (a file is created or appended to) and starts the writer thread, which
    /// ends when this is dropped.
    pub fn open(config: &AccessLogConfig) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match &config.target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (lines, queue) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(move || write_lines(queue, out))?;
        Ok(Self {
            fields: config.fields.clone(),
            lines,
        })
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let mut line = self.format(entry);
        line.push('\n');
        if self.lines.try_send(line).is_err() {
            metrics::counter!("switchyard_access_log_dropped_total").increment(1);
        }
    }

    /// The line's JSON object, with the fields in the configured order.
    fn format(&self, e: &Entry<'_>) -> String {
        let mut line = String::with_capacity(512);
        line.push('{');
        for (i, field) in self.fields.iter().enumerate() {
            let value = match field {
                AccessLogField::Time => Value::from(e.time.as_str()),
                AccessLogField::Listener => Value::from(e.listener),
                AccessLogField::Peer => Value::from(e.peer.as_str()),
                AccessLogField::Method => Value::from(e.method),
                AccessLogField::Authority => Value::from(e.authority),
                AccessLogField::Path => Value::from(e.path),
                AccessLogField::Protocol => Value::from(e.protocol),
                AccessLogField::Status => Value::from(e.status),
                AccessLogField::Bytes => Value::from(e.bytes),
                AccessLogField::DurationMs => {
                    Value::from((e.duration_ms * 1000.0).round() / 1000.0)
                }
                AccessLogField::Upstream => Value::from(e.upstream.as_deref()),
                AccessLogField::Attempts => Value::from(e.attempts),
                AccessLogField::Destination => Value::from(e.destination),
                AccessLogField::Route => Value::from(e.route),
                AccessLogField::Identity => Value::from(e.identity.as_deref()),
                AccessLogField::RequestId => Value::from(e.request_id),
                AccessLogField::TraceId => Value::from(e.trace_id.as_deref()),
                AccessLogField::Plugins => Value::from(e.plugins.clone()),
                AccessLogField::Error => Value::from(e.error),
                AccessLogField::RetryRefused => Value::from(e.retry_refused),
                AccessLogField::GrpcStatus => Value::from(e.grpc_status),
            };
            if i > 0 {
                line.push(',');
            }
            line.push('"');
            line.push_str(field.name());
            line.push_str("\":");
            line.push_str(&value.to_string());
        }
        line.push('}');
        line
    }
}

/// Writes queued lines, flushing whenever the queue runs dry, until every sender is gone.
fn write_lines(queue: mpsc::Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        match queue.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Err(e) = out.write_all(line.as_bytes()) {
                    warn!(error = %e, "access log write failed");
                }
                while let Ok(line) = queue.try_recv() {
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
    }
}

/// RFC 3339 UTC time with milliseconds, as log shippers expect.
pub fn timestamp(at: std::time::SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_default()
}
