//! The client side of a running gateway: checks for operators and
//! deployment scripts (the standard gRPC health service and server
//! reflection, spoken over the wire like any other client would: `meshops
//! probe`), and reading its answers back as mesh answers
//! ([`answer_from_proto`]), and telling what a port speaks when a call
//! failed ([`wire`]).

mod answer;
pub mod wire;

pub use answer::answer_from_proto;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The gRPC service name the gateway reports health for and registers.
pub const GATEWAY_SERVICE: &str = "meshops.v1.Gateway";

/// Why a probe could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the API key holds characters not allowed in gRPC metadata")]
    ApiKey,
    #[error("{call} on {target}: {status}")]
    Call { target: String, call: &'static str, status: String },
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// Health of the named service: `SERVING`, `NOT_SERVING`, `UNKNOWN`, ….
    pub health: String,
    /// Services listed by server reflection, sorted.
    pub services: Vec<String>,
}

impl ProbeReport {
    /// SERVING and the gateway service registered.
    pub fn ok(&self, service: &str) -> bool {
        self.health == "SERVING" && self.services.iter().any(|s| s == service)
    }
}

/// Over `channel` (connected to `target`, plaintext or TLS), asks
/// `grpc.health.v1.Health/Check` for `service` and lists the services
/// through `grpc.reflection.v1`, which sends `api_key` as a bearer token
/// when the gateway requires keys (health never does).
pub async fn probe(
    channel: Channel,
    target: &str,
    service: &str,
    api_key: Option<&str>,
) -> Result<ProbeReport, ClientError> {
    let call_err = |call, status: tonic::Status| ClientError::Call {
        target: target.into(),
        call,
        status: format!("{:?}: {}", status.code(), status.message()),
    };

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: service.into() })
        .await
        .map_err(|s| call_err("grpc.health.v1.Health/Check", s))?
        .into_inner();
    let health = ServingStatus::try_from(health.status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("status {}", health.status));

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut call = tonic::Request::new(tokio_stream::once(request));
    if let Some(key) = api_key {
        let value = format!("Bearer {}", key.trim()).parse().map_err(|_| ClientError::ApiKey)?;
        call.metadata_mut().insert("authorization", value);
    }
    let call_name = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(call)
        .await
        .map_err(|s| call_err(call_name, s))?
        .into_inner();
    let mut services = Vec::new();
    while let Some(response) = responses.message().await.map_err(|s| call_err(call_name, s))? {
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                services.extend(list.service.into_iter().map(|s| s.name));
            }
            Some(MessageResponse::ErrorResponse(e)) => {
                return Err(ClientError::Call {
                    target: target.into(),
                    call: call_name,
                    status: format!("error {}: {}", e.error_code, e.error_message),
                });
            }
            _ => {}
        }
    }
    services.sort();
    Ok(ProbeReport { health, services })
}
