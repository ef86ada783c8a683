//! Real PostgreSQL and Redis servers for a test: started from Debian's
//! packages (scripts/ci-setup.sh installs them) on a free loopback port in a
//! temp dir, never a system service, and stopped when dropped. Missing
//! binaries: the test fails under CI and is skipped elsewhere
//! (`require_tool`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A PostgreSQL binary (`initdb`, `postgres`): on PATH, or in Debian's
/// versioned folder.
fn pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(p) = super::require::tool(name) {
        return Some(p);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.join(name)).find(|p| p.is_file())
}

/// PostgreSQL refuses to run as root: as root, its commands run as the
/// `postgres` user the Debian package creates.
fn as_postgres_user(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server of the test's own.
pub struct Postgres {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    data: PathBuf,
    postgres: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// initdb in a temp dir and start the server on a free port; `None`
    /// (after a SKIP line) when PostgreSQL is not installed outside CI.
    pub fn start(what: &str) -> Option<Postgres> {
        let (initdb, postgres) = match (pg_binary("initdb"), pg_binary("postgres")) {
            (Some(i), Some(p)) => (i, p),
            _ => {
                super::require::require_tool("postgres", what);
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pgdata");
        std::fs::create_dir(&data).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data).status().unwrap();
            assert!(ok.success(), "chown of the test's pgdata failed");
        }
        let out = as_postgres_user(&initdb)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "meshops", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { child: None, _dir: dir, data, postgres, port: free_port() };
        pg.run();
        Some(pg)
    }

    fn run(&mut self) {
        let log =
            std::fs::File::create(self._dir.path().join(format!("postgres-{}.log", self.port))).unwrap();
        let child = as_postgres_user(&self.postgres)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k", "/tmp", "-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let ready = Command::new(pg_binary("pg_isready").unwrap_or_else(|| "pg_isready".into()))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "meshops", "-d", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres on port {} never became ready", self.port);
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://meshops@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (SIGKILL) and starts it again on the same
    /// data and port: the clients' connections all break.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child is setpriv exec'd into postgres: the same pid.
            let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
            let _ = child.wait();
            // Its backends exit when the postmaster dies; give them a moment
            // before the port and shared memory are reused.
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
        }
    }

    /// Runs one SQL statement with psql and returns its unaligned output.
    pub fn sql(&self, statement: &str) -> String {
        let psql = pg_binary("psql").unwrap_or_else(|| "psql".into());
        let out = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "meshops", "-d", "postgres"])
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", statement])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {statement}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis server of the test's own (no persistence).
pub struct Redis {
    child: Option<Child>,
    binary: PathBuf,
    pub port: u16,
}

impl Redis {
    pub fn start(what: &str) -> Option<Redis> {
        let binary = super::require::require_tool("redis-server", what)?;
        let mut r = Redis { child: None, binary, port: free_port() };
        r.run();
        Some(r)
    }

    fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "redis on port {} never accepted connections", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL); [`Redis::resume`] starts it again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn resume(&mut self) {
        self.run();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
