//! The binary's command layer: the clap types of `meshops` subcommands, the
//! calls into the library, and everything the CLI prints. Together with
//! `main.rs` it is the only place that prints or parses a command line; the
//! library's functions take plain option structs and return values.
//!
//! - [`serve`]: `meshops serve`.
//! - [`ask`]: `meshops ask`.
//! - [`admin`]: `meshops validate|ingest|keys|probe`.
//! - [`connect`]: how client commands reach a gateway (URL, TLS, API key).
//! - [`eval`]: `meshops eval run|score|compare`.
//! - [`batch`]: `meshops batch submit|status|results|cancel`.
//! - [`bench`]: `meshops bench`, each figure beside its limit.

pub mod admin;
pub mod ask;
pub mod batch;
pub mod bench;
pub mod connect;
pub mod eval;
pub mod serve;

use anyhow::Result;

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
