//! The request body across attempts: streamed once, read whole for plugins, streamed through
//! plugins chunk by chunk, or kept (up to a cap) so a retry can send it again.

use std::sync::Arc;

use crate::body::ClientBody;
use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderValue;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use crate::body::ProxyBody;
use crate::body::replay::Replay;
use crate::grpc;
use crate::local_response::LocalError;
use crate::plugin::{BodyOf, Chain, ChunkStream, RequestState};

use super::answers::{Answer, error_answer, error_answer_status};

/// The request body across attempts: streamed once, read whole for plugins, or streamed while a
/// copy is kept (up to a cap) so a retry can send it again.
pub(super) enum RequestBody {
    Streaming(Option<ClientBody>, Option<u64>),
    /// Streamed once, through the plugins that stream request bodies.
    Through(Option<ProxyBody>),
    Buffered(Bytes),
    Replay(Replay<ProxyBody>),
}

impl RequestBody {
    /// `cap`: the listener's `max_request_body`, enforced as the body streams.
    pub(super) fn new(body: ClientBody, cap: Option<u64>) -> Self {
        Self::Streaming(Some(body), cap)
    }

    /// Whether the body was read whole before the attempts (for plugins, or to decode it).
    pub(super) fn read_ahead(&self) -> bool {
        matches!(self, Self::Buffered(_))
    }

    /// Reads the whole body for plugins (up to `limit`; more gets 413).
    pub(super) async fn buffer(&mut self, limit: usize) -> Result<Bytes, Answer> {
        let bytes = match self {
            Self::Buffered(bytes) => return Ok(bytes.clone()),
            Self::Replay(_) | Self::Through(_) => {
                return Err(error_answer(
                    LocalError::BadRequest,
                    "the request body is already being sent",
                ));
            }
            Self::Streaming(body, _) => match body.take() {
                None => Bytes::new(),
                Some(body) => match Limited::new(body, limit).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        return Err(error_answer_status(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            HeaderValue::from_static("body-too-large"),
                            &format!(
                                "the request body is over the {limit} bytes a plugin may read"
                            ),
                        ));
                    }
                },
            },
        };
        *self = Self::Buffered(bytes.clone());
        Ok(bytes)
    }

    /// Reads a `grpc-web-text` body whole (browsers send it at once) and decodes its base64.
    pub(super) async fn decode_grpc_web_text(&mut self, limit: usize) -> Result<(), Answer> {
        let text = self.buffer(limit).await?;
        let decoded = grpc::web::decode_text(&text).map_err(|e| {
            error_answer(
                LocalError::BadRequest,
                &format!("the grpc-web-text body is not base64: {e}"),
            )
        })?;
        *self = Self::Buffered(decoded);
        Ok(())
    }

    /// Keeps up to `cap` bytes of a streamed body as it goes out, so a retry can send it again
    /// (any length, known or not: gRPC bodies have none); past the cap the body still streams,
    /// but is not retried. The first attempt never waits for the body's end.
    pub(super) fn keep_for_replay(&mut self, cap: usize) {
        let body = match self {
            Self::Streaming(slot, limit) => slot.take().map(|body| capped(body, *limit)),
            Self::Through(slot) => slot.take(),
            Self::Buffered(_) | Self::Replay(_) => return,
        };
        if let Some(body) = body {
            *self = Self::Replay(Replay::new(body, cap));
        }
    }

    /// Sends a streamed body through the plugins that stream request bodies, which get a copy
    /// of the request as it is now; false if the body is not streamed (a plugin read it whole).
    pub(super) fn stream_through(&mut self, chain: &Arc<Chain>, state: &RequestState) -> bool {
        let Self::Streaming(slot, limit) = self else {
            return false;
        };
        // A request without a body (most GETs) stays without one.
        if slot.as_ref().is_none_or(|body| body.is_end_stream()) {
            return false;
        }
        let Some(body) = slot.take() else {
            return false;
        };
        let chain = Arc::clone(chain);
        let stream = ChunkStream::new(capped(body, *limit), chain, BodyOf::Request, state.view());
        *self = Self::Through(Some(ProxyBody::boxed(stream)));
        true
    }

    pub(super) fn replayable(&self) -> bool {
        match self {
            Self::Buffered(_) => true,
            Self::Replay(replay) => replay.replayable(),
            Self::Streaming(..) | Self::Through(_) => false,
        }
    }

    pub(super) fn for_attempt(&mut self) -> Option<ProxyBody> {
        match self {
            Self::Buffered(bytes) if bytes.is_empty() => Some(ProxyBody::Empty),
            Self::Buffered(bytes) => Some(ProxyBody::full(bytes.clone())),
            Self::Replay(replay) => replay
                .replayable()
                .then(|| ProxyBody::Replay(Box::new(replay.attempt()))),
            Self::Streaming(body, limit) => body.take().map(|body| capped(body, *limit)),
            Self::Through(body) => body.take(),
        }
    }
}

/// The client's body, cut off with [`BodyTooLarge`] past `limit` when there is one.
pub(super) fn capped(body: ClientBody, limit: Option<u64>) -> ProxyBody {
    match limit {
        None => ProxyBody::Streaming(body),
        Some(limit) => ProxyBody::Capped {
            body,
            remaining: limit,
            limit,
        },
    }
}
