//! When a call reached the server: the instant its deadline counts from,
//! stamped by a tower layer on the gRPC server and by the other front doors
//! (the HTTP API, MCP) on the calls they make.

/// When a call reached the server, stamped before decoding: the deadline
/// counts from here, the same instant tonic's own `grpc-timeout` timer
/// starts, so the gateway's deadline never lands after tonic's.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub tokio::time::Instant);

/// Tower service that stamps [`Arrival`] into each request's extensions.
#[derive(Debug, Clone)]
pub struct StampArrival<S> {
    pub inner: S,
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for StampArrival<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: tonic::codegen::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(Arrival(tokio::time::Instant::now()));
        self.inner.call(req)
    }
}

/// A call from a front door other than gRPC (the HTTP API, MCP): its HTTP
/// headers become the call's metadata (the API key, `traceparent`), and it
/// is stamped with its arrival as the gRPC server stamps its calls.
pub fn front_door_request<T>(headers: tonic::codegen::http::HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(headers),
        Default::default(),
        message,
    );
    request.extensions_mut().insert(Arrival(tokio::time::Instant::now()));
    request
}
