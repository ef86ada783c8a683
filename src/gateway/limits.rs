//! Input limits that act below the services, for every call (health and
//! reflection included): the number of gRPC metadata entries, and the
//! decoded message size.
//!
//! A call with more metadata entries (HTTP/2 headers, standard ones such as
//! `content-type` and `te` included) than `gateway.max_metadata_entries` is
//! refused with `INVALID_ARGUMENT` before it reaches a service. tonic
//! enforces `gateway.max_message_bytes` while decoding and answers
//! `OUT_OF_RANGE` with its own wording. The gateway's contract is
//! `INVALID_ARGUMENT` naming the setting, so this layer rewrites that one
//! status. It is safe to key on the code: no service of the gateway answers
//! `OUT_OF_RANGE` itself (see `gateway::error::status`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;

/// Tower service enforcing the metadata limit and renaming tonic's
/// message-size refusal.
#[derive(Debug, Clone)]
pub struct InputLimits<S> {
    pub inner: S,
    /// `gateway.max_message_bytes`, quoted in the message.
    pub max_message_bytes: usize,
    /// `gateway.max_metadata_entries`.
    pub max_metadata_entries: usize,
}

impl<S, B, RB> tower::Service<http::Request<B>> for InputLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let entries = req.headers().len();
        if entries > self.max_metadata_entries {
            let status = tonic::Status::invalid_argument(format!(
                "the call has {entries} metadata entries; the limit is {} (gateway.max_metadata_entries)",
                self.max_metadata_entries
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let limit = self.max_message_bytes;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let too_large = tonic::Status::from_header_map(resp.headers())
                .is_some_and(|s| s.code() == tonic::Code::OutOfRange);
            if too_large {
                let status = tonic::Status::invalid_argument(format!(
                    "request message exceeds the limit of {limit} bytes (gateway.max_message_bytes)"
                ));
                if let Err(e) = status.add_header(resp.headers_mut()) {
                    tracing::warn!(error = %e, "could not rewrite the message-size status");
                }
            }
            Ok(resp)
        })
    }
}
