//! The binary's command layer: the clap types of `meshops` subcommands, the
//! calls into the library, and everything the CLI prints. Together with
//! `main.rs` it is the only place that prints or parses a command line; the
//! library's functions take plain option structs and return values.
//!
//! - [`serve`]: `meshops serve`.
//! - [`ask`]: `meshops ask`.
//! - [`admin`]: `meshops validate|keys|probe`.
//! - [`ingest`]: `meshops ingest`, locally or through a gateway (`--target`).
//! - [`connect`]: how client commands reach a gateway (URL, TLS, API key).
//! - [`eval`]: `meshops eval run|score|compare`.
//! - [`batch`]: `meshops batch submit|status|results|cancel|list`.
//! - [`bench`]: `meshops bench`, each figure beside its limit.

pub mod admin;
pub mod ask;
pub mod batch;
pub mod bench;
pub mod connect;
pub mod eval;
pub mod ingest;
pub mod live;
pub mod serve;

use anyhow::Result;
use meshops::retrieval::RetrievalError;

/// Wraps a request with the API key as `authorization: Bearer <key>`, when
/// there is one. The key is trimmed: read from an environment variable or a
/// file, it often ends in a newline no gateway key has.
pub fn authorized<T>(message: T, key: Option<&str>) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        let value = format!("Bearer {}", key.trim())
            .parse()
            .map_err(|_| anyhow::anyhow!("the API key holds characters not allowed in gRPC metadata"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// A gateway's error status as an error: its code and message.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// An error from opening the store for `command` (`ingest`, `eval run`):
/// when the embedded store is locked, most often by a gateway serving from
/// the same data dir, it says so and how to go through that gateway
/// (`--target`; `listen` is `gateway.listen`) instead of the store's own
/// error; any other error as it is.
pub fn store_error(e: anyhow::Error, listen: &str, command: &str) -> anyhow::Error {
    let locked = e.chain().find_map(|cause| match cause.downcast_ref::<RetrievalError>() {
        Some(RetrievalError::Locked { path, holder }) => Some((path.clone(), *holder)),
        _ => None,
    });
    let Some((path, holder)) = locked else { return e };
    let holder = holder.map(|pid| format!(" (process {pid})")).unwrap_or_default();
    let url = connect::target_url(None, || Some(listen.to_string()));
    anyhow::anyhow!(
        "a running gateway{holder} holds the embedded store {path}, which one process opens at a time; \
         {command} through that gateway instead: `meshops {command} --target {url} ...` \
         (or stop the gateway first)"
    )
}
