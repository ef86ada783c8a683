//! How client commands reach a running gateway: the URL, TLS material
//! and the API key (`ask`, `batch`, `probe`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// How `ask` and `batch` reach the gateway: TLS material and the API key.
/// Global, so `meshops batch submit FILE --api-key …` works after the
/// batch subcommand too.
#[derive(clap::Args)]
pub struct ConnectArgs {
    /// PEM file of the CA that signed the gateway's certificate (needed for
    /// an https:// target).
    #[arg(long, value_name = "FILE", env = "MESHOPS_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a gateway that requires mutual TLS.
    #[arg(long, value_name = "FILE", requires = "client_key", global = true)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert", global = true)]
    pub client_key: Option<PathBuf>,
    /// API key sent as `authorization: Bearer <key>` (from the environment,
    /// so it stays out of shell history and process lists).
    #[arg(long, env = "MESHOPS_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

/// The gateway URL a client command talks to: `--target`, else
/// `http://` + `gateway.listen` (`listen` gives it; loopback for a
/// wildcard address).
pub fn target_url(target: Option<&str>, listen: impl FnOnce() -> Option<String>) -> String {
    match target {
        Some(t) => t.to_string(),
        None => {
            let listen = listen().unwrap_or_else(|| "127.0.0.1:50051".into());
            format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1"))
        }
    }
}

/// Connects to the gateway at `target`, over TLS for an https:// target
/// (the CA from --ca-cert; a client certificate for mutual TLS).
pub async fn connect(target: &str, conn: &ConnectArgs) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut endpoint =
        Endpoint::from_shared(target.to_string()).with_context(|| format!("`{target}` is not a URL"))?;
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if target.starts_with("https://") {
        let Some(ca) = &conn.ca_cert else {
            bail!(
                "--ca-cert FILE is required for an https:// target (the CA that signed the gateway's certificate)"
            );
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&conn.client_cert, &conn.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    } else if conn.ca_cert.is_some() || conn.client_cert.is_some() {
        bail!("--ca-cert and --client-cert need an https:// target; `{target}` is plaintext");
    }
    endpoint.connect().await.with_context(|| {
        format!("cannot connect to {target}; is `meshops serve` running (with TLS if https)?")
    })
}

/// A client command's outcome, with a hint added to its error when the
/// target's scheme and what the server speaks disagree (`http://` to a TLS
/// port, `https://` to a plaintext one): the transport's own error
/// ("connection reset", "corrupt message") does not say so.
pub async fn with_hint<T>(target: &str, outcome: Result<T>) -> Result<T> {
    use meshops::client::wire::{self, Wire};
    let Err(e) = outcome else { return outcome };
    let https = target.starts_with("https://");
    let hint = match wire::speaks(target).await {
        Some(Wire::Tls) if !https => format!(
            "the server at {target} speaks TLS: use https:// and --ca-cert FILE (the CA that signed its certificate)"
        ),
        Some(Wire::PlaintextHttp2) if https => {
            format!("the server at {target} speaks plaintext (no TLS): use http:// and leave out --ca-cert")
        }
        _ => return Err(e),
    };
    Err(e.context(hint))
}
