//! TLS for the gRPC server over real sockets, with certificates made at test time: a client that
//! trusts the CA checks health, a plaintext client fails, required client certificates (and
//! their subject reaching a request), and certificate reload by call, by file change and by
//! SIGHUP while an older connection keeps working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use patron_grpc::auth::ConnectionPeer;
use patron_server::tls::{self, ClientAuth, TlsAcceptor, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bound on every client step, so a broken server fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(5);

/// A test CA and what it signs.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Patron test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, common_name: &str, serial: u64, names: &[&str], client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn server(&self, common_name: &str, serial: u64) -> Leaf {
        self.leaf(common_name, serial, &["localhost", "127.0.0.1"], false)
    }
}

/// The server's certificate files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(pki: &Pki, server: &Leaf) -> Self {
        let files = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::write(files.ca(), &pki.ca_pem).expect("write CA");
        files.install(server);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("clients-ca.crt")
    }

    /// Replaces the pair the way an operator's tool would: each file written whole, by rename.
    fn install(&self, leaf: &Leaf) {
        write_atomically(&self.key(), &leaf.key_pem);
        write_atomically(&self.cert(), &leaf.cert_pem);
    }

    fn settings(&self) -> TlsSettings {
        TlsSettings::new(self.cert(), self.key())
    }
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A running health server behind the acceptor; stops when dropped.
struct Running {
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    peers: Arc<Mutex<Vec<Option<ConnectionPeer>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    async fn start(settings: &TlsSettings) -> Self {
        let acceptor = tls::acceptor(settings).expect("acceptor");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&peers);
        // What the other layers (authentication) see: the peer, put there by tonic before them.
        let record =
            tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
                seen.lock()
                    .expect("peers")
                    .push(req.extensions().get::<ConnectionPeer>().cloned());
                req
            });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = acceptor.incoming(listener);
        let task = tokio::spawn(async move {
            Server::builder()
                .layer(record)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            addr,
            acceptor,
            peers,
            stop: Some(stop),
            task,
        }
    }

    fn peers(&self) -> Vec<Option<ConnectionPeer>> {
        self.peers.lock().expect("peers").clone()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = tokio::time::timeout(STEP, &mut self.task)
            .await
            .expect("server stops")
            .expect("server task");
        served.expect("server ran without error");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client certificate and key for rustls.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn identity(leaf: &Leaf) -> Identity {
    (
        vec![leaf.der.clone()],
        PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key"),
    )
}

/// A TLS connection to `addr` that trusts only the test CA, ALPN h2.
async fn tls_connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    identity: Option<Identity>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    let provider = tls::crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let stream = tokio::time::timeout(
        STEP,
        connector.connect(ServerName::try_from("localhost")?, tcp),
    )
    .await??;
    Ok(stream)
}

/// The certificate the server presented on this connection.
fn server_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("server certificate")
        .clone()
}

/// A gRPC health client over exactly this connection: a reconnect would fail, so a call that
/// succeeds went over it.
async fn health_over(
    stream: TlsStream<TcpStream>,
) -> Result<HealthClient<tonic::transport::Channel>, BoxError> {
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: http::Uri| {
        let stream = slot.lock().ok().and_then(|mut s| s.take());
        async move {
            stream
                .map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("this test connection was already used"))
        }
    });
    let channel = tokio::time::timeout(
        STEP,
        Endpoint::from_static("http://localhost").connect_with_connector(connector),
    )
    .await??;
    Ok(HealthClient::new(channel))
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
) -> Result<ServingStatus, BoxError> {
    let response =
        tokio::time::timeout(STEP, client.check(HealthCheckRequest::default())).await??;
    Ok(response.into_inner().status())
}

/// Connects, then checks health once.
async fn connect_and_check(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    identity: Option<Identity>,
) -> Result<(ServingStatus, CertificateDer<'static>), BoxError> {
    let stream = tls_connect(addr, ca, identity).await?;
    let leaf = server_leaf(&stream);
    let mut client = health_over(stream).await?;
    Ok((check(&mut client).await?, leaf))
}

#[tokio::test]
async fn a_client_trusting_the_ca_checks_health_and_plaintext_fails() {
    let pki = Pki::new();
    let server = pki.server("patron-server", 1);
    let files = Files::new(&pki, &server);
    let running = Running::start(&files.settings()).await;

    let (status, leaf) = connect_and_check(running.addr, &pki.ca_der, None)
        .await
        .expect("health over TLS");
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(leaf, server.der);
    let peers = running.peers();
    assert_eq!(peers.len(), 1);
    let peer = peers[0]
        .clone()
        .expect("ConnectionPeer in the request's extensions");
    assert_eq!(peer.subject, None, "no client certificate, no subject");
    assert_eq!(
        peer.remote_addr.map(|a| a.ip()),
        Some(std::net::Ipv4Addr::LOCALHOST.into())
    );

    // h2c against the TLS port: fails, and the server keeps serving.
    let plaintext = async {
        let channel = Endpoint::from_shared(format!("http://{}", running.addr))?
            .connect_timeout(STEP)
            .timeout(STEP)
            .connect()
            .await?;
        check(&mut HealthClient::new(channel)).await
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), plaintext)
        .await
        .expect("plaintext attempt ends");
    assert!(
        outcome.is_err(),
        "a plaintext client must fail: {outcome:?}"
    );

    // A client that does not trust the CA fails too.
    let other = Pki::new();
    assert!(
        connect_and_check(running.addr, &other.ca_der, None)
            .await
            .is_err()
    );

    let (status, _) = connect_and_check(running.addr, &pki.ca_der, None)
        .await
        .expect("still serving after failed handshakes");
    assert_eq!(status, ServingStatus::Serving);
    running.shutdown().await;
}

#[tokio::test]
async fn required_client_certificates_reject_anonymous_clients_and_name_the_others() {
    let pki = Pki::new();
    let server = pki.server("patron-server", 1);
    let files = Files::new(&pki, &server);
    let settings = TlsSettings {
        client_ca_file: Some(files.ca()),
        client_auth: ClientAuth::Required,
        ..files.settings()
    };
    let running = Running::start(&settings).await;

    let anonymous = connect_and_check(running.addr, &pki.ca_der, None).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");

    // A certificate from another CA is refused as well.
    let stranger = Pki::new().leaf("crm-backend", 7, &[], true);
    let refused = connect_and_check(running.addr, &pki.ca_der, Some(identity(&stranger))).await;
    assert!(
        refused.is_err(),
        "untrusted client certificate: {refused:?}"
    );
    assert!(running.peers().is_empty(), "no request got through");

    let client = pki.leaf("crm-backend", 2, &[], true);
    let (status, _) = connect_and_check(running.addr, &pki.ca_der, Some(identity(&client)))
        .await
        .expect("health with a client certificate");
    assert_eq!(status, ServingStatus::Serving);
    let peers = running.peers();
    assert_eq!(peers.len(), 1);
    let peer = peers[0]
        .clone()
        .expect("ConnectionPeer in the request's extensions");
    assert_eq!(peer.subject.as_deref(), Some("CN=crm-backend"));
    assert!(peer.remote_addr.is_some());
    running.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificates_admit_both() {
    let pki = Pki::new();
    let server = pki.server("patron-server", 1);
    let files = Files::new(&pki, &server);
    let settings = TlsSettings {
        client_ca_file: Some(files.ca()),
        client_auth: ClientAuth::Optional,
        ..files.settings()
    };
    let running = Running::start(&settings).await;
    connect_and_check(running.addr, &pki.ca_der, None)
        .await
        .expect("anonymous client");
    let client = pki.leaf("reporting", 3, &[], true);
    connect_and_check(running.addr, &pki.ca_der, Some(identity(&client)))
        .await
        .expect("client with a certificate");
    let subjects: Vec<Option<String>> = running
        .peers()
        .into_iter()
        .map(|p| p.expect("peer").subject)
        .collect();
    assert_eq!(subjects, vec![None, Some("CN=reporting".to_string())]);
    running.shutdown().await;
}

#[test]
fn bad_settings_are_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pki = Pki::new();
    let server = pki.server("patron-server", 1);
    let files = Files::new(&pki, &server);
    assert!(
        tls::acceptor(&files.settings()).is_err(),
        "outside a runtime"
    );
    runtime.block_on(async {
        let missing = TlsSettings::new(files.dir.path().join("nope.crt"), files.key());
        let e = tls::acceptor(&missing).expect_err("missing certificate");
        assert!(e.contains("nope.crt"), "{e}");

        let other = pki.server("other", 9);
        std::fs::write(files.dir.path().join("other.key"), &other.key_pem).expect("write");
        let mismatched = TlsSettings::new(files.cert(), files.dir.path().join("other.key"));
        assert!(
            tls::acceptor(&mismatched).is_err(),
            "key of another certificate"
        );

        let required_without_ca = TlsSettings {
            client_auth: ClientAuth::Required,
            ..files.settings()
        };
        assert!(tls::acceptor(&required_without_ca).is_err());
        tls::acceptor(&files.settings()).expect("good settings");
    });
}

/// Opens new connections until one presents `want`, for at most `within`.
async fn wait_for_certificate(
    addr: SocketAddr,
    pki: &Pki,
    want: &CertificateDer<'static>,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let stream = tls_connect(addr, &pki.ca_der, None)
            .await
            .expect("new connection");
        if server_leaf(&stream) == *want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let pki = Pki::new();
    let first = pki.server("patron-a", 1);
    let files = Files::new(&pki, &first);
    let settings = TlsSettings {
        reload_interval: Duration::from_millis(100),
        ..files.settings()
    };
    let running = Running::start(&settings).await;

    // A connection opened before any reload.
    let old = tls_connect(running.addr, &pki.ca_der, None)
        .await
        .expect("first connection");
    assert_eq!(server_leaf(&old), first.der);
    let mut old = health_over(old)
        .await
        .expect("channel over the first connection");
    assert_eq!(
        check(&mut old).await.expect("check"),
        ServingStatus::Serving
    );

    // 1. By call.
    let second = pki.server("patron-b", 2);
    files.install(&second);
    running.acceptor.reload().expect("reload");
    let (status, leaf) = connect_and_check(running.addr, &pki.ca_der, None)
        .await
        .expect("new connection after reload");
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(
        leaf, second.der,
        "new connections present the new certificate"
    );
    assert_eq!(
        check(&mut old)
            .await
            .expect("the old connection still works"),
        ServingStatus::Serving
    );

    // A bad pair is refused and the current one stays.
    let stray = pki.server("patron-stray", 3);
    write_atomically(&files.key(), &stray.key_pem);
    let e = running.acceptor.reload().expect_err("mismatched pair");
    assert!(!e.is_empty());
    write_atomically(&files.cert(), "not a certificate");
    assert!(running.acceptor.reload().is_err(), "garbage certificate");
    let (_, leaf) = connect_and_check(running.addr, &pki.ca_der, None)
        .await
        .expect("still serving the good pair");
    assert_eq!(leaf, second.der);

    // 2. By the modification-time watcher, within a few intervals.
    let third = pki.server("patron-c", 4);
    files.install(&third);
    wait_for_certificate(running.addr, &pki, &third.der, Duration::from_secs(5)).await;
    assert_eq!(
        check(&mut old)
            .await
            .expect("the old connection still works"),
        ServingStatus::Serving
    );
    running.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let pki = Pki::new();
    let first = pki.server("patron-a", 1);
    let files = Files::new(&pki, &first);
    // Only the signal can cause a reload within this test's time.
    let settings = TlsSettings {
        reload_interval: Duration::from_secs(3600),
        ..files.settings()
    };
    let running = Running::start(&settings).await;
    let second = pki.server("patron-b", 2);
    files.install(&second);
    // The acceptor registered its SIGHUP handler before returning: the signal cannot end the
    // test process (and every acceptor in this process reloads, harmlessly).
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_for_certificate(running.addr, &pki, &second.der, Duration::from_secs(5)).await;
    running.shutdown().await;
}

/// A channel over exactly this TLS connection.
async fn channel_over(stream: TlsStream<TcpStream>) -> tonic::transport::Channel {
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: http::Uri| {
        let stream = slot.lock().ok().and_then(|mut s| s.take());
        async move {
            stream
                .map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("this test connection was already used"))
        }
    });
    tokio::time::timeout(
        STEP,
        Endpoint::from_static("http://localhost").connect_with_connector(connector),
    )
    .await
    .expect("in time")
    .expect("channel")
}

/// The real Patron server with TLS, required client certificates and authentication on: the
/// certificate's subject is the principal and its scopes decide; a plaintext client gets
/// nowhere.
#[tokio::test]
async fn patron_over_mutual_tls_maps_the_certificate_to_a_principal() {
    use patron_proto::loyalty::v1 as lpb;
    use patron_proto::scoring::v1 as spb;

    let pki = Pki::new();
    let server = pki.server("patron-server", 1);
    let files = Files::new(&pki, &server);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let mut settings = patron_server::Settings::for_database(&url);
    settings.tls = Some(TlsSettings {
        client_ca_file: Some(files.ca()),
        client_auth: ClientAuth::Required,
        ..files.settings()
    });
    settings.auth = patron_grpc::auth::AuthSettings {
        enabled: true,
        certificates: vec![patron_grpc::auth::CertificatePrincipal {
            subject: "CN=crm-backend".into(),
            name: "crm".into(),
            scopes: ["scoring:read".to_owned()].into_iter().collect(),
        }],
        open_health: true,
        open_reflection: true,
        ..Default::default()
    };
    let app = patron_server::Application::build(settings)
        .await
        .expect("builds");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // The mapped certificate reads scores (the customer does not exist: past authorization).
    let crm = pki.leaf("crm-backend", 10, &[], true);
    let stream = tls_connect(addr, &pki.ca_der, Some(identity(&crm)))
        .await
        .expect("handshake with a client certificate");
    let channel = channel_over(stream).await;
    let err = patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient::new(
        channel.clone(),
    )
    .get_customer_value(spb::GetCustomerValueRequest {
        customer_id: "nobody".into(),
        ..Default::default()
    })
    .await
    .expect_err("no such customer");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // …but may not adjust points.
    let err = patron_proto::loyalty::v1::loyalty_service_client::LoyaltyServiceClient::new(channel)
        .adjust_points(lpb::AdjustPointsRequest {
            program_id: "p".into(),
            customer_id: "c".into(),
            points: 5,
            reason: "r".into(),
            issuer: String::new(),
            request_id: "x".into(),
        })
        .await
        .expect_err("missing scope");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("cert:crm"), "{err:?}");

    // A CA-signed certificate nobody mapped: UNAUTHENTICATED.
    let stranger = pki.leaf("stranger", 11, &[], true);
    let stream = tls_connect(addr, &pki.ca_der, Some(identity(&stranger)))
        .await
        .expect("handshake");
    let err = patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient::new(
        channel_over(stream).await,
    )
    .get_customer_value(spb::GetCustomerValueRequest {
        customer_id: "nobody".into(),
        ..Default::default()
    })
    .await
    .expect_err("unmapped");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // No certificate, or no TLS at all: no call gets through.
    assert!(
        tls_connect(addr, &pki.ca_der, None).await.is_err() || {
            // Some TLS 1.3 clients learn of the refusal only on first use.
            let stream = tls_connect(addr, &pki.ca_der, None)
                .await
                .expect("handshake");
            let mut health = HealthClient::new(channel_over(stream).await);
            health.check(HealthCheckRequest::default()).await.is_err()
        }
    );
    let plaintext = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(STEP)
        .timeout(STEP);
    let refused = match plaintext.connect().await {
        Err(_) => true,
        Ok(ch) => HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext client must fail");

    let _ = stop.send(());
    let _ = tokio::time::timeout(STEP, serving).await;
}
