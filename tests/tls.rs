//! TLS on the gateway: certificates made at test time (a CA, a server
//! certificate for `localhost`, client certificates), the real gateway on a
//! loopback socket, tonic's rustls client, and the `meshops ask` binary
//! (with its hint when the URL's scheme and the server disagree).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshops::config::{LoadOptions, MeshSpec, TlsSettings};
use meshops::gateway::{Overrides, ServerHandle};
use meshops::proto::AskRequest;
use meshops::proto::gateway_client::GatewayClient;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA and PEM files it signed, in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA (`<name>-ca.pem`), a server certificate for `localhost` and
    /// 127.0.0.1 (`server.pem`, `server.key`) and a client certificate
    /// (`<name>-client.pem`, `<name>-client.key`).
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir };
        pki.add_ca(name, true);
        pki
    }

    fn add_ca(&self, name: &str, with_server: bool) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        self.write(&format!("{name}-ca.pem"), &ca.pem());
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        if with_server {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &issuer).unwrap();
            self.write("server.pem", &cert.pem());
            self.write("server.key", &key.serialize_pem());
        }
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        self.write(&format!("{name}-client.pem"), &cert.pem());
        self.write(&format!("{name}-client.key"), &key.serialize_pem());
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.path(file), text).unwrap();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }
}

struct TlsServer {
    server: ServerHandle,
    _data: tempfile::TempDir,
}

async fn start(pki: &Pki, mutual: bool) -> TlsServer {
    let data = tempfile::tempdir().unwrap();
    let mut spec = common::spec(data.path());
    spec.settings.gateway.tls = Some(TlsSettings {
        cert_path: pki.path("server.pem"),
        key_path: pki.path("server.key"),
        client_ca_path: mutual.then(|| pki.path("main-ca.pem")),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = meshops::gateway::start_with(spec, listener, Overrides::default()).await.unwrap();
    TlsServer { server, _data: data }
}

/// A TLS channel trusting `ca`, presenting `client` (cert, key) if given.
async fn tls_channel(
    pki: &Pki,
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.read(ca))).domain_name("localhost");
    if let Some(name) = client {
        tls = tls.identity(Identity::from_pem(
            pki.read(&format!("{name}-client.pem")),
            pki.read(&format!("{name}-client.key")),
        ));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}

fn hello() -> AskRequest {
    AskRequest { query: "hello".into(), ..Default::default() }
}

/// Asks over a fresh TLS channel; any failure (handshake or call) as text.
async fn ask_tls(
    pki: &Pki,
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<&str>,
) -> Result<String, String> {
    let channel = tls_channel(pki, addr, ca, client).await.map_err(|e| format!("connect: {e:?}"))?;
    let answer = GatewayClient::new(channel).ask(hello()).await.map_err(|s| format!("call: {s:?}"))?;
    Ok(answer.into_inner().intent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_are_served_and_plaintext_clients_fail_cleanly() {
    let pki = Pki::new("main");
    pki.add_ca("other", false);
    let t = start(&pki, false).await;
    let addr = t.server.addr;

    assert_eq!(ask_tls(&pki, addr, "main-ca.pem", None).await.unwrap(), "greeting");

    // Plaintext HTTP/2 to the TLS port: the server drops the connection at
    // the first bytes, so the client gets an error rather than waiting.
    // The bound only turns a hang into a failure; it does not time anything.
    let plaintext = tokio::time::timeout(Duration::from_secs(20), async {
        match Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            Err(e) => Err(format!("connect: {e:?}")),
            Ok(channel) => {
                GatewayClient::new(channel).ask(hello()).await.map(|_| ()).map_err(|s| format!("call: {s:?}"))
            }
        }
    })
    .await
    .expect("a plaintext client to the TLS port hung instead of failing");
    assert!(plaintext.is_err(), "a plaintext client was served by the TLS port");

    // A client that does not trust the server's CA refuses the server.
    let err = ask_tls(&pki, addr, "other-ca.pem", None).await.unwrap_err();
    assert!(err.contains("connect"), "{err}");

    // The server kept serving through both failures.
    assert_eq!(ask_tls(&pki, addr, "main-ca.pem", None).await.unwrap(), "greeting");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let pki = Pki::new("main");
    pki.add_ca("other", false);
    let t = start(&pki, true).await;
    let addr = t.server.addr;

    let no_cert = ask_tls(&pki, addr, "main-ca.pem", None).await;
    assert!(no_cert.is_err(), "a client without a certificate was served: {no_cert:?}");
    let wrong_ca = ask_tls(&pki, addr, "main-ca.pem", Some("other")).await;
    assert!(wrong_ca.is_err(), "a client certificate from another CA was accepted: {wrong_ca:?}");
    assert_eq!(ask_tls(&pki, addr, "main-ca.pem", Some("main")).await.unwrap(), "greeting");
    t.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ask_command_speaks_tls_and_mutual_tls() {
    let pki = Pki::new("main");
    let t = start(&pki, true).await;
    let target = format!("https://localhost:{}", t.server.addr.port());
    let run = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
            .args(&args)
            .current_dir(common::root())
            .env_remove("MESHOPS_ENV")
            .env_remove("MESHOPS_API_KEY")
            .output()
            .unwrap()
    };
    let ca = pki.path("main-ca.pem").display().to_string();
    let mut args: Vec<String> =
        ["ask", "--json", "--target", &target, "--ca-cert", &ca, "hello"].map(String::from).to_vec();
    let refused = tokio::task::spawn_blocking({
        let args = args.clone();
        move || run(args)
    })
    .await
    .unwrap();
    assert!(!refused.status.success(), "served without a client certificate");

    args.extend([
        "--client-cert".to_string(),
        pki.path("main-client.pem").display().to_string(),
        "--client-key".to_string(),
        pki.path("main-client.key").display().to_string(),
    ]);
    // `meshops probe` takes the same connection options: health and
    // reflection over mutual TLS.
    let mut probe_args: Vec<String> =
        ["probe", "--target", &target, "--ca-cert", &ca].map(String::from).to_vec();
    probe_args.extend(args[7..].iter().cloned());
    let probe = tokio::task::spawn_blocking(move || run(probe_args)).await.unwrap();
    let probed = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "{probed}{}", String::from_utf8_lossy(&probe.stderr));
    assert!(probed.contains("health:   SERVING") && probed.contains("meshops.v1.Gateway"), "{probed}");

    let out = tokio::task::spawn_blocking(move || run(args)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["intent"], "greeting", "{stdout}");

    // An https target without --ca-cert is a usage error that says so.
    let out = tokio::task::spawn_blocking(move || {
        run(["ask", "--target", &target, "hello"].map(String::from).to_vec())
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-cert"));
    t.server.shutdown().await.unwrap();
}

/// Runs the `meshops` binary from the project root, off the async threads.
async fn meshops(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshops"))
            .args(&args)
            .current_dir(common::root())
            .env_remove("MESHOPS_ENV")
            .env_remove("MESHOPS_API_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A client command whose URL's scheme the server does not speak fails
/// with a hint saying what the server speaks and what to change, both
/// ways: `http://` to a TLS port (`ask`, `batch`), `https://` to a
/// plaintext one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_speaking_the_wrong_protocol_is_told_which_one_the_server_speaks() {
    let pki = Pki::new("main");
    let t = start(&pki, false).await;
    let plain_url = format!("http://127.0.0.1:{}", t.server.addr.port());
    for command in [vec!["ask", "hello"], vec!["batch", "list"]] {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--target".to_string(), plain_url.clone()]);
        let out = meshops(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit code 1 with a message: not a silent end by a signal.
        assert_eq!(out.status.code(), Some(1), "{command:?} over plaintext to a TLS port: {:?}", out.status);
        assert!(
            stderr.contains(&format!("the server at {plain_url} speaks TLS"))
                && stderr.contains("https://")
                && stderr.contains("--ca-cert"),
            "{command:?}: {stderr}"
        );
    }
    t.server.shutdown().await.unwrap();

    let plain = common::start(|_| {}, meshops::gateway::Overrides::default()).await;
    let tls_url = format!("https://localhost:{}", plain.server.addr.port());
    let ca = pki.path("main-ca.pem").display().to_string();
    let out =
        meshops(["ask", "--target", &tls_url, "--ca-cert", &ca, "hello"].map(String::from).to_vec()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "TLS to a plaintext port: {:?}", out.status);
    assert!(
        stderr.contains(&format!("the server at {tls_url} speaks plaintext")) && stderr.contains("http://"),
        "{stderr}"
    );
    // The plaintext gateway itself answers its own scheme, with no hint.
    let http_url = format!("http://127.0.0.1:{}", plain.server.addr.port());
    let out = meshops(["ask", "--target", &http_url, "hello"].map(String::from).to_vec()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    plain.server.shutdown().await.unwrap();
}

fn load_with(overlay: &str, dir: &Path) -> Result<MeshSpec, String> {
    let file = dir.join("overlay.toml");
    std::fs::write(&file, overlay).unwrap();
    let opts = LoadOptions { config_file: Some(file), ..LoadOptions::files_only(common::root()) };
    MeshSpec::load(&opts).map_err(|e| e.to_string())
}

#[test]
fn bad_tls_files_are_config_errors_naming_the_field() {
    let pki = Pki::new("main");
    let dir = pki.dir.path();
    let missing = load_with(
        &format!(
            "[gateway.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            dir.join("nope.pem").display(),
            pki.path("server.key").display()
        ),
        dir,
    )
    .unwrap_err();
    assert!(missing.contains("gateway.tls.cert_path") && missing.contains("nope.pem"), "{missing}");
    assert!(!missing.contains("gateway.tls.key_path"), "{missing}");

    // A certificate where the key should be, and a key as the client CA.
    let swapped = load_with(
        &format!(
            "[gateway.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\nclient_ca_path = \"{}\"\n",
            pki.path("server.pem").display(),
            pki.path("server.pem").display(),
            pki.path("server.key").display()
        ),
        dir,
    )
    .unwrap_err();
    assert!(swapped.contains("gateway.tls.key_path"), "{swapped}");
    assert!(swapped.contains("gateway.tls.client_ca_path"), "{swapped}");

    let unknown =
        load_with("[gateway.tls]\ncert_path = \"a\"\nkey_path = \"b\"\nca = \"c\"\n", dir).unwrap_err();
    assert!(unknown.contains("ca"), "{unknown}");

    let good = load_with(
        &format!(
            "[gateway.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display()
        ),
        dir,
    );
    assert!(good.is_ok(), "{good:?}");
}

/// A key that does not belong to the certificate fails the start with an
/// error, before any server instance runs on the mesh's threads.
#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_fails_the_start() {
    let pki = Pki::new("main");
    let data = tempfile::tempdir().unwrap();
    let mut spec = common::spec(data.path());
    spec.settings.gateway.tls = Some(TlsSettings {
        cert_path: pki.path("server.pem"),
        key_path: pki.path("main-client.key"),
        client_ca_path: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match meshops::gateway::start_with(spec, listener, Overrides::default()).await {
        Ok(_) => panic!("a mismatched key must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("gRPC server"), "{err}");
}
