//! TLS for the gRPC server: rustls with the `ring` provider, ALPN `h2`, optional or required
//! client certificates, and certificate reload without a restart.
//!
//! [`acceptor`] loads the certificate chain and key, builds the rustls configuration and starts
//! a reload task; [`TlsAcceptor::incoming`] turns a bound listener into the stream of
//! established connections that `tonic::transport::Server` serves with
//! `serve_with_incoming_shutdown`. Each connection's [`ConnectionPeer`] (remote address and, over
//! mutual TLS, the client certificate's subject) is its `ConnectInfo`: tonic inserts it into
//! every request's extensions before any `Server::builder().layer(..)` layer runs.
//!
//! Reload: the certificate and key files are read again on [`TlsAcceptor::reload`], on SIGHUP
//! (unix), and when either file's modification time or size changes (checked every
//! `reload_interval`). A new pair that cannot be read, parsed, or whose key does not match the
//! certificate is logged and the pair in use stays. Connections already established keep the
//! certificate they were opened with; new handshakes present the new one. The client CA file is
//! read once, at start: changing it needs a restart.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use patron_grpc::auth::ConnectionPeer;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How often the certificate files are checked for changes unless configured.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Longest a TLS handshake may take; a slower client is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; past this, new TCP connections wait in the listen backlog.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Connections accepted per poll before other work (finished handshakes) gets a turn.
const ACCEPT_BATCH: usize = 64;

/// Pause after an accept error that is not about one connection (e.g. too many open files).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Whether clients must present a certificate signed by the client CA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may present a certificate (then it must verify); without one it still connects,
    /// with no subject.
    #[default]
    Optional,
    /// A client without a valid certificate fails the handshake.
    Required,
}

/// Where the server's certificate and key are, and how clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. Without it, clients are not
    /// asked for a certificate. Read once, at start.
    pub client_ca_file: Option<PathBuf>,
    /// Only meaningful with `client_ca_file`.
    pub client_auth: ClientAuth,
    /// How often the files' modification times are checked; zero turns the check off (reload
    /// then happens only on SIGHUP and [`TlsAcceptor::reload`]).
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// Server TLS from a certificate and key, no client certificates, the default interval.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            client_auth: ClientAuth::Optional,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// Loads the certificate chain and key (PEM), builds the rustls `ServerConfig` (ALPN h2) and
/// starts the reload task (which stops once every clone of the acceptor and every stream from
/// [`TlsAcceptor::incoming`] is dropped, at its next wake-up). Must be called within a Tokio
/// runtime.
pub fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, String> {
    // The reload task is spawned on the current runtime.
    tokio::runtime::Handle::try_current()
        .map_err(|_| "TLS: the acceptor needs a running Tokio runtime".to_string())?;
    let provider = crypto_provider();

    let stamps = Stamps::read(&settings.cert_file, &settings.key_file);
    let key = load_certified_key(&settings.cert_file, &settings.key_file, &provider)?;
    tracing::info!(
        cert_file = %settings.cert_file.display(),
        certificate = %describe(&key),
        "TLS certificate loaded"
    );
    let resolver = Arc::new(Resolver {
        current: RwLock::new(Arc::new(key)),
    });

    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &settings.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("client CA file {}: {e}", ca_file.display()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = match settings.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client CA file {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if settings.client_auth == ClientAuth::Required => {
            return Err("TLS: required client certificates need a client CA file".into());
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as Arc<_>);
    config.alpn_protocols = vec![b"h2".to_vec()];

    let shared = Arc::new(Shared {
        cert_file: settings.cert_file.clone(),
        key_file: settings.key_file.clone(),
        provider,
        resolver,
        stamps: Mutex::new(stamps),
        tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    });
    spawn_reload_task(Arc::downgrade(&shared), settings.reload_interval);
    Ok(TlsAcceptor { shared })
}

/// The rustls crypto provider the server uses: *ring*'s (already in the build for JWT
/// verification), passed to every builder rather than installed as the process default.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecated ring's provider for lacking post-quantum key exchange; it is
    // still supported and still offers X25519, P-256 and P-384.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// Accepts TLS connections with the current certificate; cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    shared: Arc<Shared>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("cert_file", &self.shared.cert_file)
            .field("key_file", &self.shared.key_file)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Wraps a bound listener into the stream of established TLS connections, for tonic's
    /// `Router::serve_with_incoming_shutdown`. TCP connections get TCP_NODELAY; handshakes run
    /// concurrently, each bounded by [`HANDSHAKE_TIMEOUT`]; a failed one (a plaintext client, no
    /// client certificate when required, a timeout) is logged at debug and dropped. The stream
    /// never yields an error and never ends; dropping it closes the listener and abandons
    /// handshakes in progress.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<TlsConn, io::Error>> + Send + 'static {
        Incoming {
            listener,
            acceptor: self.clone(),
            handshakes: JoinSet::new(),
            backoff: None,
        }
    }

    /// Reads the certificate and key files now and, when they form a valid pair, uses them for
    /// new connections. On error the pair in use stays.
    pub fn reload(&self) -> Result<(), String> {
        self.shared.reload()
    }
}

/// One established TLS connection, with what is known of its peer.
pub type TlsConn = crate::conn::Conn<tokio_rustls::server::TlsStream<TcpStream>>;

/// The connection of a finished handshake: its peer's address and, when the client presented
/// a certificate, its subject.
fn tls_conn(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    remote_addr: SocketAddr,
) -> TlsConn {
    let subject = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| match x509_parser::parse_x509_certificate(leaf) {
            Ok((_, cert)) => Some(cert.subject().to_string()),
            Err(e) => {
                tracing::debug!(%remote_addr, error = %e, "client certificate subject unreadable");
                None
            }
        });
    TlsConn::new(
        stream,
        ConnectionPeer {
            remote_addr: Some(remote_addr),
            subject,
            ..ConnectionPeer::default()
        },
    )
}

/// What the acceptor, its clones, its streams and the reload task share.
struct Shared {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    /// The files as last read (or tried); also serializes reloads.
    stamps: Mutex<Stamps>,
    tls: tokio_rustls::TlsAcceptor,
}

impl Shared {
    fn reload(&self) -> Result<(), String> {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        *stamps = Stamps::read(&self.cert_file, &self.key_file);
        self.load_and_swap()
    }

    /// Reloads when either file changed since it was last read or tried.
    fn reload_if_changed(&self) {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Stamps::read(&self.cert_file, &self.key_file);
        if now == *stamps {
            return;
        }
        // Remembered even when the new pair is bad, so it is logged once per change: a
        // certificate written before its key is tried again when the key file changes.
        *stamps = now;
        if let Err(e) = self.load_and_swap() {
            tracing::error!(error = %e, "TLS certificate files changed but cannot be used; keeping the current certificate");
        }
    }

    fn load_and_swap(&self) -> Result<(), String> {
        let key = load_certified_key(&self.cert_file, &self.key_file, &self.provider)?;
        tracing::info!(
            cert_file = %self.cert_file.display(),
            certificate = %describe(&key),
            "TLS certificate reloaded"
        );
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }
}

/// Hands every handshake the current certificate; reload swaps it.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Modification time and size of the certificate and key files (None: unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps {
    cert: Option<(SystemTime, u64)>,
    key: Option<(SystemTime, u64)>,
}

impl Stamps {
    fn read(cert_file: &Path, key_file: &Path) -> Self {
        fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        }
        Self {
            cert: stamp(cert_file),
            key: stamp(key_file),
        }
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// Reads a chain and its key and checks that they belong together.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read_certificates(cert_file)?;
    let pem = std::fs::read(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no usable PEM private key ({e})", key_file.display()))?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))?;
    if let Some(leaf) = certified.cert.first() {
        x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    }
    Ok(certified)
}

/// The leaf's subject and expiry, for logs.
fn describe(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, cert)| {
            format!(
                "{} (serial {}, not after {})",
                cert.subject(),
                cert.raw_serial_as_string(),
                cert.validity().not_after
            )
        })
        .unwrap_or_else(|| "<unreadable>".into())
}

/// Watches for SIGHUP and file changes; ends once `shared` has no strong reference left.
fn spawn_reload_task(shared: Weak<Shared>, interval: Duration) {
    // Registered before returning, so a SIGHUP sent once the acceptor exists is never the
    // default action (termination). Tokio keeps the handler for the process lifetime.
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS reload only on file changes");
            None
        }
    };
    tokio::spawn(async move {
        let mut ticks = (!interval.is_zero()).then(|| {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let signalled = tokio::select! {
                () = tick(&mut ticks) => false,
                () = hangup_received(
                    #[cfg(unix)]
                    &mut hangup,
                ) => true,
            };
            let Some(shared) = shared.upgrade() else {
                break;
            };
            if signalled {
                tracing::info!("SIGHUP: reloading the TLS certificate");
                if let Err(e) = shared.reload() {
                    tracing::error!(error = %e, "TLS reload failed; keeping the current certificate");
                }
            } else {
                shared.reload_if_changed();
            }
        }
        tracing::debug!("TLS acceptor dropped: reload task ends");
    });
}

async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
async fn hangup_received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn hangup_received() {
    std::future::pending().await
}

/// The stream [`TlsAcceptor::incoming`] returns.
struct Incoming {
    listener: TcpListener,
    /// Keeps the reload task alive while the server serves.
    acceptor: TlsAcceptor,
    /// Handshakes in progress; dropping the set aborts them.
    handshakes: JoinSet<Option<TlsConn>>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Incoming {
    fn start_handshake(&mut self, tcp: TcpStream, remote_addr: SocketAddr) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote_addr, error = %e, "cannot set TCP_NODELAY");
        }
        let tls = self.acceptor.shared.tls.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => Some(tls_conn(stream, remote_addr)),
                Ok(Err(e)) => {
                    tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    None
                }
            }
        });
    }

    /// Accepts what the listener has ready.
    fn accept_ready(&mut self, cx: &mut Context<'_>) -> Accepting {
        if let Some(backoff) = &mut self.backoff {
            if backoff.as_mut().poll(cx).is_pending() {
                return Accepting::Waiting;
            }
            self.backoff = None;
        }
        for _ in 0..ACCEPT_BATCH {
            if self.handshakes.len() >= MAX_PENDING_HANDSHAKES {
                return Accepting::Full;
            }
            match self.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, remote_addr))) => self.start_handshake(tcp, remote_addr),
                Poll::Ready(Err(e)) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "accept failed");
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, backoff = ?ACCEPT_ERROR_BACKOFF, "accept failed");
                    let mut sleep = Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF));
                    if sleep.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    self.backoff = Some(sleep);
                    return Accepting::Waiting;
                }
                Poll::Pending => return Accepting::Waiting,
            }
        }
        Accepting::MoreReady
    }
}

/// Where accepting stopped.
enum Accepting {
    /// The listener (or the pause after an error) will wake the stream.
    Waiting,
    /// Too many handshakes in progress: a finishing one frees a place.
    Full,
    /// The batch ended with connections perhaps still waiting.
    MoreReady,
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

impl Stream for Incoming {
    type Item = Result<TlsConn, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let accepting = this.accept_ready(cx);
            if matches!(accepting, Accepting::MoreReady) {
                // Come back for the rest after finished handshakes had their turn.
                cx.waker().wake_by_ref();
            }
            let mut freed = false;
            loop {
                match this.handshakes.poll_join_next(cx) {
                    Poll::Ready(Some(Ok(Some(conn)))) => return Poll::Ready(Some(Ok(conn))),
                    Poll::Ready(Some(Ok(None))) => freed = true,
                    Poll::Ready(Some(Err(e))) => {
                        freed = true;
                        tracing::warn!(error = %e, "TLS handshake task failed");
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            // Full with places freed: accept again now, nothing else would wake the stream.
            if !(matches!(accepting, Accepting::Full) && freed) {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> TlsSettings {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let settings = TlsSettings::new(dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&settings.cert_file, cert.pem()).expect("write cert");
        std::fs::write(&settings.key_file, signing_key.serialize_pem()).expect("write key");
        settings
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_reload_task_ends_once_the_acceptor_and_its_streams_are_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = TlsSettings {
            reload_interval: Duration::from_millis(20),
            ..write_pair(dir.path())
        };
        let metrics = tokio::runtime::Handle::current().metrics();
        let alive = || metrics.num_alive_tasks();
        assert_eq!(alive(), 0);
        let acceptor = acceptor(&settings).expect("acceptor");
        assert_eq!(alive(), 1, "the reload task");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let incoming = acceptor.incoming(listener);
        drop(acceptor);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(alive(), 1, "the stream keeps the reload task");
        drop(incoming);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(alive(), 0, "nothing holds the acceptor: the task has ended");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unchanged_file_is_not_reloaded_and_a_changed_one_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = TlsSettings {
            reload_interval: Duration::ZERO,
            ..write_pair(dir.path())
        };
        let acceptor = acceptor(&settings).expect("acceptor");
        let current = || {
            Arc::clone(
                &acceptor
                    .shared
                    .resolver
                    .current
                    .read()
                    .expect("not poisoned"),
            )
        };
        let before = current();
        acceptor.shared.reload_if_changed();
        assert!(Arc::ptr_eq(&before, &current()), "same files, same key");
        write_pair(dir.path());
        acceptor.shared.reload_if_changed();
        assert!(!Arc::ptr_eq(&before, &current()), "new files, new key");
        assert_ne!(before.cert, current().cert);
    }
}
