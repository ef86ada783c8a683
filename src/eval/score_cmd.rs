//! `meshops eval` subcommand (not implemented yet).

/// Arguments (to be defined).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub async fn execute(_args: &Args) -> Result<(), super::EvalError> {
    Err(super::EvalError::Run("not implemented yet".into()))
}
