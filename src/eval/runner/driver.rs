//! What answers a row: the in-process mesh (rows go in as `mesh::Ask`
//! messages) or a deployed gateway (`--target`, over gRPC), started once
//! per run and shut down after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::options::{BASE_VARIANT, RunOptions};
use crate::config::MeshSpec;
use crate::eval::EvalError;
use crate::eval::dataset::Row;
use crate::mesh::{Answer, Ask, AskInput};
use crate::proto::gateway_client::GatewayClient;
use crate::runtime::Runtime;

/// Where a run's rows are answered.
pub enum Driver {
    /// The mesh, started by the shared runtime assembly; it keeps the
    /// store's handle to see when the stopped mesh has let go of it.
    Mesh(Runtime),
    /// A deployed gateway's client (`--target`).
    Grpc(GatewayClient<tonic::transport::Channel>),
}

impl Driver {
    /// Asks one row (as `variant`, repeat `repeat`) within `timeout`; the
    /// error is the mesh's message or the gRPC code and message. A row
    /// with `turns` is a conversation: its earlier turns are asked first,
    /// in one session of its own (new for every ask, so runs, repeats and
    /// variants never share history), and the answer is the last turn's.
    pub async fn ask(
        &self,
        row: &Row,
        repeat: u32,
        variant: &str,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let variant_opt = (variant != BASE_VARIANT).then(|| variant.to_string());
        let session_id = if row.turns.is_empty() {
            String::new()
        } else {
            format!("eval-{}-{repeat}-{}", row.id, crate::telemetry::propagation::new_trace_id())
        };
        for (i, earlier) in row.turns.iter().enumerate() {
            self.ask_one(earlier, &session_id, variant_opt.clone(), (row, repeat, variant), timeout)
                .await
                .map_err(|e| format!("turn {} of {}: {e}", i + 1, row.turns.len() + 1))?;
        }
        self.ask_one(&row.query, &session_id, variant_opt, (row, repeat, variant), timeout).await
    }

    /// Asks one question (a turn of `session_id` when it is not empty).
    async fn ask_one(
        &self,
        query: &str,
        session_id: &str,
        variant_opt: Option<String>,
        (row, repeat, variant): (&Row, u32, &str),
        timeout: Duration,
    ) -> Result<Answer, String> {
        match self {
            Driver::Mesh(runtime) => {
                let input = AskInput {
                    query: query.to_string(),
                    session_id: session_id.to_string(),
                    variant: variant_opt,
                    metadata: BTreeMap::from([("source".to_string(), "eval".to_string())]),
                };
                let span = tracing::info_span!("eval.row", row = %row.id, repeat, variant = %variant);
                let deadline = tokio::time::Instant::now() + timeout;
                let ask = Ask::new(input, deadline, crate::telemetry::propagation::new_trace_id(), span);
                // Cancelled if this future is dropped (e.g. the run stops).
                let _guard = ask.cancel.clone().drop_guard();
                runtime.mesh.ask(ask).await.map_err(|e| e.to_string())
            }
            Driver::Grpc(client) => {
                let mut client = client.clone();
                let mut req = tonic::Request::new(crate::proto::AskRequest {
                    query: query.to_string(),
                    session_id: session_id.to_string(),
                    variant: variant_opt.unwrap_or_default(),
                    metadata: [("source".to_string(), "eval".to_string())].into(),
                });
                req.set_timeout(timeout);
                match client.ask(req).await {
                    Ok(resp) => Ok(crate::client::answer_from_proto(resp.into_inner())),
                    Err(s) => Err(format!("gRPC {:?}: {}", s.code(), s.message())),
                }
            }
        }
    }

    /// Stops the mesh once nothing else holds the driver, and waits until
    /// it has let go of the store; a gRPC client just closes.
    pub async fn shutdown(driver: Arc<Driver>) {
        if let Ok(Driver::Mesh(runtime)) = Arc::try_unwrap(driver) {
            runtime.shutdown().await;
        }
    }
}

/// Connects to `opts.target`, or starts the mesh `spec` describes through
/// the shared runtime assembly (as `meshops serve` does, ingesting the
/// corpus into an empty collection).
pub async fn start_driver(spec: &MeshSpec, opts: &RunOptions) -> Result<Driver, EvalError> {
    if let Some(target) = &opts.target {
        let client = GatewayClient::connect(target.clone())
            .await
            .map_err(|e| EvalError::Run(format!("cannot connect to {target}: {e}")))?;
        return Ok(Driver::Grpc(client));
    }
    let options = crate::runtime::Options { models: opts.model_overrides.clone(), threads: None };
    let runtime = crate::runtime::start(Arc::new(spec.clone()), options).await?;
    Ok(Driver::Mesh(runtime))
}
