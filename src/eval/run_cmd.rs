//! `meshops eval` subcommand (not implemented yet).

/// Arguments (to be defined).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
/// `load` says where the mesh configuration comes from (the CLI's `--root`
/// and `--config`, `MESHOPS_ENV`, `MESHOPS__…` variables).
pub async fn execute(_args: &Args, _load: crate::config::LoadOptions) -> Result<(), super::EvalError> {
    Err(super::EvalError::Run("not implemented yet".into()))
}
