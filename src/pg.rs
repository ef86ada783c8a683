//! PostgreSQL, for state every replica shares (batch jobs, conversations):
//! a connection pool from a `postgresql://` URL, TLS when the URL's
//! `sslmode` asks for it (or the server offers it, under the default
//! `prefer`), and versioned migrations run at start.
//!
//! Migrations are per component (`batch`, `sessions`) in the table
//! `meshops_schema`; each runs in the transaction that records it, under a
//! transaction-scoped advisory lock, so replicas starting together apply
//! each migration exactly once and a crash leaves a database at one
//! version or the next.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

/// Why a PostgreSQL call failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{what}: {message}")]
    Config { what: String, message: String },
    #[error("postgres: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres: cannot get a connection: {0}")]
    Pool(String),
    #[error("postgres: {0}")]
    Schema(String),
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgError::Pool(e.to_string())
    }
}

/// A driver error with the server's own message (the driver's display
/// says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// A URL with its password hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// A pool of up to `size` connections to `url` (`what` names the setting
/// in errors). Connections are made when first needed: a database that is
/// down at start is reported by [`migrate`], and one that restarts later is
/// reconnected to.
pub fn pool(url: &str, size: usize, what: &str) -> Result<Pool, PgError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| PgError::Config { what: what.to_string(), message: format!("{}: {e}", redact(url)) })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("meshops");
    let tls = tls_connector();
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| PgError::Config { what: what.to_string(), message: e.to_string() })
}

/// TLS with the platform's root certificates (managed databases such as
/// Azure Database for PostgreSQL present publicly trusted certificates).
fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new(tls_config())
}

/// The TLS client configuration for database connections.
pub fn tls_config() -> rustls::ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
}

/// Brings `component`'s tables to the last of `migrations` (migration `n`
/// takes version `n` to `n + 1`). A database from a newer meshops (a higher
/// version) is refused rather than written with an older idea of it.
pub async fn migrate(pool: &Pool, component: &str, migrations: &[&str]) -> Result<(), PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // One migrating replica at a time; released at commit.
    tx.execute("SELECT pg_advisory_xact_lock(7210393113)", &[]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS meshops_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    )
    .await?;
    let version: i32 = tx
        .query_opt("SELECT version FROM meshops_schema WHERE component = $1", &[&component])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let known = migrations.len() as i32;
    if version > known {
        return Err(PgError::Schema(format!(
            "the {component} tables are at version {version}; this build knows {known}: upgrade meshops"
        )));
    }
    for (n, sql) in migrations.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| PgError::Schema(format!("{component} migration {}: {e}", n + 1)))?;
    }
    if version < known {
        tx.execute(
            "INSERT INTO meshops_schema (component, version) VALUES ($1, $2) \
             ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
            &[&component, &known],
        )
        .await?;
        tracing::info!(component, from = version, to = known, "postgres schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// Whether an error is the connection's (the server went away, restarted,
/// or the pool could not connect): worth retrying once the server is back.
pub fn is_transient(e: &PgError) -> bool {
    match e {
        PgError::Pool(_) => true,
        PgError::Db(e) => e.is_closed() || e.as_db_error().is_none(),
        PgError::Config { .. } | PgError::Schema(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        let r = redact("postgresql://meshops:s3cret@db.example:5432/meshops?sslmode=require");
        assert!(!r.contains("s3cret") && r.contains("db.example"), "{r}");
        assert_eq!(redact("not a url"), "(unparsable URL)");
    }

    #[test]
    fn a_malformed_url_names_the_setting_without_its_password() {
        let Err(e) = pool("postgresql://u:pw@host:notaport/db", 2, "batch.url") else {
            panic!("a malformed URL was accepted")
        };
        let text = e.to_string();
        assert!(text.starts_with("batch.url: "), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }
}
