//! Configuration: defaults, then a TOML file, then `PATRON_…` environment variables, then
//! command-line flags (later wins). clap merges flags and environment; the file fills the rest.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use patron_domain::Currency;
use patron_grpc::admission::Limits;
use patron_grpc::auth::{ApiKey, AuthSettings, CertificatePrincipal, JwtSettings};

use crate::tls::{ClientAuth, TlsSettings};
use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A secret that never prints: database URLs carry passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The file form of the configuration: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub currency: Option<String>,
    pub request_timeout_secs: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub stream_batch_size: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
    pub segment_refresh_secs: Option<u64>,
    pub loyalty_expiry_interval_secs: Option<u64>,
    pub feed_poll_millis: Option<u64>,
    pub feed_retention_secs: Option<u64>,
    pub earner_lease_secs: Option<u64>,
    pub index_snapshot: Option<PathBuf>,
    pub index_snapshot_secs: Option<u64>,
    pub metrics_listen: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: Option<String>,
    pub max_in_flight: Option<usize>,
    pub max_in_flight_per_connection: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_streams_per_connection: Option<usize>,
    pub db_acquire_timeout_millis: Option<u64>,
    pub db_startup_timeout_secs: Option<u64>,
    pub auth: Option<bool>,
    pub auth_open_health: Option<bool>,
    pub auth_open_reflection: Option<bool>,
    pub api_keys: Option<Vec<ApiKeyConfig>>,
    pub jwt: Option<JwtConfig>,
    pub client_certificates: Option<Vec<ClientCertificateConfig>>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub tls_client_auth: Option<ClientAuthMode>,
}

/// `[[api_keys]]`: an API key by the SHA-256 of the key (`patron hash-key` prints it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    pub sha256: String,
    pub scopes: Vec<String>,
}

/// `[jwt]`: how bearer JWTs are verified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub jwks_file: Option<PathBuf>,
    pub public_key_files: Option<Vec<PathBuf>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: Option<u64>,
    pub scope_claim: Option<String>,
}

/// `[[client_certificates]]`: a client certificate subject (mutual TLS) as a principal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateConfig {
    pub subject: String,
    pub name: String,
    pub scopes: Vec<String>,
}

/// Whether TLS clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// Verified if presented; calls without one need another credential.
    Optional,
    /// The handshake fails without a certificate signed by the client CA.
    Required,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("bad config file {}: {e}", path.display()))
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: Secret,
    pub log_format: LogFormat,
    pub log_level: String,
    pub currency: Currency,
    pub request_timeout: Duration,
    pub max_message_bytes: usize,
    pub stream_batch_size: usize,
    pub shutdown_grace: Duration,
    pub drain_timeout: Duration,
    /// WatchSegment full re-checks.
    pub segment_refresh: Duration,
    /// How often the loyalty expiry task runs.
    pub loyalty_expiry_interval: Duration,
    /// How often the change feed is read when no notification woke the reader.
    pub feed_poll: Duration,
    /// How long changes stay in the feed once every live process has applied them.
    pub feed_retention: Duration,
    /// How long the loyalty earner's lease lasts without renewal.
    pub earner_lease: Duration,
    /// Where the index snapshot is kept; `None`: no snapshot, the index is read from the
    /// database at every start.
    pub index_snapshot: Option<PathBuf>,
    /// How often the snapshot is rewritten while the feed moves.
    pub index_snapshot_interval: Duration,
    /// Where `GET /metrics` is served; `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Where spans are exported (OTLP/gRPC); `None`: no exporter.
    pub otlp: Option<crate::telemetry::OtlpSettings>,
    /// Calls in flight and open streams.
    pub limits: Limits,
    /// How long a call waits for a database connection.
    pub db_acquire_timeout: Duration,
    /// How long start-up keeps trying to reach the database.
    pub db_startup_timeout: Duration,
    /// How often the database is checked (health, fail-fast).
    pub db_check_interval: Duration,
    /// Who may call what.
    pub auth: AuthSettings,
    /// TLS on the gRPC port; `None`: plaintext (HTTP/2 prior knowledge).
    pub tls: Option<TlsSettings>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://patron.db";
pub const DEFAULT_LOG_LEVEL: &str = "info,sqlx=warn";
/// The `service.name` of exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "patron";
/// Largest StreamEvents transaction; bounds the events a stream holds in memory (a few batches).
pub const MAX_STREAM_BATCH_SIZE: usize = 100_000;
/// Change feed polling (the fallback on Postgres, where notifications wake readers at once).
pub const DEFAULT_FEED_POLL_MILLIS: u64 = 200;
/// Change feed retention.
pub const DEFAULT_FEED_RETENTION_SECS: u64 = 3600;
/// Loyalty earner lease.
pub const DEFAULT_EARNER_LEASE_SECS: u64 = 15;
/// Index snapshot rewrites (well inside the feed's retention, so a snapshot can catch up).
pub const DEFAULT_INDEX_SNAPSHOT_SECS: u64 = 600;
/// How long a call waits for a database connection.
pub const DEFAULT_DB_ACQUIRE_TIMEOUT_MILLIS: u64 = 2000;
/// How long start-up keeps trying to reach the database.
pub const DEFAULT_DB_STARTUP_TIMEOUT_SECS: u64 = 60;

impl Settings {
    /// Settings for tests and embedding: SQLite at `database_url`, port 0 on loopback.
    pub fn for_database(database_url: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: Secret::new(database_url),
            log_format: LogFormat::Human,
            log_level: DEFAULT_LOG_LEVEL.into(),
            currency: Currency::parse("USD").unwrap_or_else(|_| unreachable!("USD is a currency")),
            request_timeout: Duration::from_secs(30),
            max_message_bytes: 16 * 1024 * 1024,
            stream_batch_size: 20_000,
            shutdown_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            segment_refresh: Duration::from_secs(60),
            loyalty_expiry_interval: Duration::from_secs(60),
            feed_poll: Duration::from_millis(DEFAULT_FEED_POLL_MILLIS),
            feed_retention: Duration::from_secs(DEFAULT_FEED_RETENTION_SECS),
            earner_lease: Duration::from_secs(DEFAULT_EARNER_LEASE_SECS),
            index_snapshot: None,
            index_snapshot_interval: Duration::from_secs(DEFAULT_INDEX_SNAPSHOT_SECS),
            metrics_listen: None,
            otlp: None,
            limits: Limits::default(),
            db_acquire_timeout: Duration::from_millis(DEFAULT_DB_ACQUIRE_TIMEOUT_MILLIS),
            db_startup_timeout: Duration::from_secs(DEFAULT_DB_STARTUP_TIMEOUT_SECS),
            db_check_interval: Duration::from_secs(1),
            auth: AuthSettings {
                open_health: true,
                open_reflection: true,
                ..AuthSettings::default()
            },
            tls: None,
        }
    }
}

/// Values given on the command line or in the environment (clap merged them already).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub currency: Option<String>,
    pub request_timeout_secs: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub stream_batch_size: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub drain_timeout_secs: Option<u64>,
    pub segment_refresh_secs: Option<u64>,
    pub loyalty_expiry_interval_secs: Option<u64>,
    pub feed_poll_millis: Option<u64>,
    pub feed_retention_secs: Option<u64>,
    pub earner_lease_secs: Option<u64>,
    pub index_snapshot: Option<PathBuf>,
    pub index_snapshot_secs: Option<u64>,
    pub metrics_listen: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`: below the file.
    pub otel_endpoint: Option<String>,
    pub otel_service_name: Option<String>,
    pub max_in_flight: Option<usize>,
    pub max_in_flight_per_connection: Option<usize>,
    pub max_streams: Option<usize>,
    pub max_streams_per_connection: Option<usize>,
    pub db_acquire_timeout_millis: Option<u64>,
    pub db_startup_timeout_secs: Option<u64>,
    pub auth: Option<bool>,
    /// `NAME:SHA256:SCOPE,SCOPE…`, each.
    pub api_keys: Vec<String>,
    pub jwt_jwks_file: Option<PathBuf>,
    pub jwt_public_key_files: Vec<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway_secs: Option<u64>,
    pub jwt_scope_claim: Option<String>,
    pub auth_open_reflection: Option<bool>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub tls_client_auth: Option<ClientAuthMode>,
    /// `NAME|SCOPE,SCOPE…|SUBJECT`, each.
    pub client_certificates: Vec<String>,
}

/// Parses `NAME|SCOPE,SCOPE…|SUBJECT` (flags and `PATRON_CLIENT_CERTIFICATES`): `|` because
/// scopes hold colons and subjects commas and equals signs.
pub fn parse_client_certificate_flag(s: &str) -> Result<CertificatePrincipal, String> {
    let mut parts = s.splitn(3, '|');
    let (Some(name), Some(scopes), Some(subject)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("a client certificate is NAME|SCOPE,SCOPE…|SUBJECT".into());
    };
    if name.trim().is_empty() || subject.trim().is_empty() {
        return Err("a client certificate needs a name and a subject".into());
    }
    let scopes: Vec<String> = scopes.split(',').map(str::to_owned).collect();
    Ok(CertificatePrincipal {
        subject: subject.trim().to_owned(),
        name: name.trim().to_owned(),
        scopes: scope_set(&scopes),
    })
}

fn scope_set(scopes: &[String]) -> BTreeSet<String> {
    scopes
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `NAME:SHA256:SCOPE,SCOPE…` (flags and `PATRON_API_KEYS`).
pub fn parse_api_key_flag(s: &str) -> Result<ApiKey, String> {
    let mut parts = s.splitn(3, ':');
    let (Some(name), Some(hash), Some(scopes)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("an API key is NAME:SHA256:SCOPE,SCOPE… (the key's SHA-256 in hex, from `patron hash-key`)".into());
    };
    let scopes: Vec<String> = scopes.split(',').map(str::to_owned).collect();
    api_key(name, hash, &scopes)
}

fn api_key(name: &str, hash: &str, scopes: &[String]) -> Result<ApiKey, String> {
    if name.trim().is_empty() {
        return Err("an API key needs a name".into());
    }
    let sha256 = patron_grpc::auth::parse_hash(&hash.trim().to_ascii_lowercase()).ok_or_else(|| {
        format!("API key {name}: sha256 must be 64 hex digits (the SHA-256 of the key; `patron hash-key` prints it)")
    })?;
    Ok(ApiKey {
        name: name.trim().to_owned(),
        sha256,
        scopes: scope_set(scopes),
    })
}

fn read_file(what: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Resolves authentication from flags/environment over the file.
fn resolve_auth(file: &FileConfig, o: &Overrides) -> Result<AuthSettings, String> {
    let enabled = o.auth.or(file.auth).unwrap_or(false);
    let mut api_keys = Vec::new();
    for k in file.api_keys.iter().flatten() {
        api_keys.push(api_key(&k.name, &k.sha256, &k.scopes)?);
    }
    for k in &o.api_keys {
        api_keys.push(parse_api_key_flag(k)?);
    }
    let fj = file.jwt.clone().unwrap_or_default();
    let jwks_file = o.jwt_jwks_file.clone().or(fj.jwks_file);
    let key_files: Vec<PathBuf> = if o.jwt_public_key_files.is_empty() {
        fj.public_key_files.unwrap_or_default()
    } else {
        o.jwt_public_key_files.clone()
    };
    let jwt = if jwks_file.is_some() || !key_files.is_empty() {
        let jwks = match &jwks_file {
            Some(p) => Some(read_file("JWKS file", p)?),
            None => None,
        };
        let mut public_keys_pem = Vec::new();
        for p in &key_files {
            public_keys_pem.push(read_file("JWT public key file", p)?);
        }
        Some(JwtSettings {
            jwks,
            public_keys_pem,
            issuer: o.jwt_issuer.clone().or(fj.issuer),
            audience: o.jwt_audience.clone().or(fj.audience),
            leeway_secs: o.jwt_leeway_secs.or(fj.leeway_secs).unwrap_or(60),
            scope_claim: o
                .jwt_scope_claim
                .clone()
                .or(fj.scope_claim)
                .unwrap_or_else(|| "scope".into()),
        })
    } else {
        None
    };
    let mut certificates: Vec<CertificatePrincipal> = file
        .client_certificates
        .iter()
        .flatten()
        .map(|c| CertificatePrincipal {
            subject: c.subject.clone(),
            name: c.name.clone(),
            scopes: scope_set(&c.scopes),
        })
        .collect();
    for c in &o.client_certificates {
        certificates.push(parse_client_certificate_flag(c)?);
    }
    let settings = AuthSettings {
        enabled,
        api_keys,
        jwt,
        certificates,
        open_health: file.auth_open_health.unwrap_or(true),
        open_reflection: o
            .auth_open_reflection
            .or(file.auth_open_reflection)
            .unwrap_or(true),
    };
    // Fail at start-up, not on the first call.
    patron_grpc::auth::Authenticator::new(&settings)?;
    Ok(settings)
}

fn resolve_tls(file: &FileConfig, o: &Overrides) -> Result<Option<TlsSettings>, String> {
    let cert = o.tls_cert_file.clone().or(file.tls_cert_file.clone());
    let key = o.tls_key_file.clone().or(file.tls_key_file.clone());
    let client_ca = o
        .tls_client_ca_file
        .clone()
        .or(file.tls_client_ca_file.clone());
    let mode = o.tls_client_auth.or(file.tls_client_auth);
    match (cert, key) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsSettings {
            cert_file,
            key_file,
            client_auth: match mode {
                Some(ClientAuthMode::Required) => ClientAuth::Required,
                _ => ClientAuth::Optional,
            },
            client_ca_file: client_ca,
            reload_interval: Duration::from_secs(5),
        })),
        (None, None) => {
            if client_ca.is_some() || mode.is_some() {
                return Err(
                    "client certificates need TLS: set tls_cert_file and tls_key_file".into(),
                );
            }
            Ok(None)
        }
        _ => Err("TLS needs both tls_cert_file and tls_key_file".into()),
    }
}

/// Resolves settings: overrides first, then the file, then defaults.
pub fn resolve(file: FileConfig, o: Overrides) -> Result<Settings, String> {
    let auth = resolve_auth(&file, &o)?;
    let tls = resolve_tls(&file, &o)?;
    let limits = resolve_limits(&file, &o)?;
    let index_snapshot = o.index_snapshot.clone().or(file.index_snapshot.clone());
    if let Some(path) = &index_snapshot {
        if path.as_os_str().is_empty() {
            return Err(
                "index_snapshot: an empty path (give a file, e.g. /var/lib/patron/index.snapshot)"
                    .into(),
            );
        }
        if path.is_dir() {
            return Err(format!(
                "index_snapshot {}: a directory (give a file in it, e.g. {}/index.snapshot)",
                path.display(),
                path.display()
            ));
        }
    }
    let metrics_listen = match o.metrics_listen.clone().or(file.metrics_listen.clone()) {
        Some(a) => Some(
            a.parse::<SocketAddr>()
                .map_err(|e| format!("metrics_listen {a:?}: {e} (expected e.g. 0.0.0.0:9464)"))?,
        ),
        None => None,
    };
    let otlp = resolve_otlp(&file, &o);
    let listen = o
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| format!("listen address {listen:?}: {e} (expected e.g. 127.0.0.1:50051)"))?;
    let currency = o.currency.or(file.currency).unwrap_or_else(|| "USD".into());
    let currency = Currency::parse(&currency).map_err(|e| format!("currency: {e}"))?;
    let stream_batch_size = o
        .stream_batch_size
        .or(file.stream_batch_size)
        .unwrap_or(20_000);
    if !(1..=MAX_STREAM_BATCH_SIZE).contains(&stream_batch_size) {
        return Err(format!(
            "stream_batch_size must be between 1 and {MAX_STREAM_BATCH_SIZE}"
        ));
    }
    let max_message_bytes = o
        .max_message_bytes
        .or(file.max_message_bytes)
        .unwrap_or(16 * 1024 * 1024);
    if max_message_bytes < 64 * 1024 {
        return Err("max_message_bytes must be at least 65536".into());
    }
    Ok(Settings {
        listen,
        database_url: Secret::new(
            o.database_url
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
        ),
        log_format: o.log_format.or(file.log_format).unwrap_or(LogFormat::Human),
        log_level: o
            .log_level
            .or(file.log_level)
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
        currency,
        request_timeout: Duration::from_secs(
            o.request_timeout_secs
                .or(file.request_timeout_secs)
                .unwrap_or(30)
                .max(1),
        ),
        max_message_bytes,
        stream_batch_size,
        shutdown_grace: Duration::from_secs(
            o.shutdown_grace_secs
                .or(file.shutdown_grace_secs)
                .unwrap_or(0),
        ),
        drain_timeout: Duration::from_secs(
            o.drain_timeout_secs
                .or(file.drain_timeout_secs)
                .unwrap_or(30),
        ),
        segment_refresh: Duration::from_secs(
            o.segment_refresh_secs
                .or(file.segment_refresh_secs)
                .unwrap_or(60)
                .max(1),
        ),
        loyalty_expiry_interval: Duration::from_secs(
            o.loyalty_expiry_interval_secs
                .or(file.loyalty_expiry_interval_secs)
                .unwrap_or(60)
                .max(1),
        ),
        feed_poll: Duration::from_millis(
            o.feed_poll_millis
                .or(file.feed_poll_millis)
                .unwrap_or(DEFAULT_FEED_POLL_MILLIS)
                .clamp(10, 60_000),
        ),
        feed_retention: Duration::from_secs(
            o.feed_retention_secs
                .or(file.feed_retention_secs)
                .unwrap_or(DEFAULT_FEED_RETENTION_SECS)
                .max(60),
        ),
        earner_lease: Duration::from_secs(
            o.earner_lease_secs
                .or(file.earner_lease_secs)
                .unwrap_or(DEFAULT_EARNER_LEASE_SECS)
                .clamp(3, 600),
        ),
        index_snapshot,
        index_snapshot_interval: Duration::from_secs(
            o.index_snapshot_secs
                .or(file.index_snapshot_secs)
                .unwrap_or(DEFAULT_INDEX_SNAPSHOT_SECS)
                .clamp(10, 86_400),
        ),
        metrics_listen,
        otlp,
        limits,
        db_acquire_timeout: Duration::from_millis(
            o.db_acquire_timeout_millis
                .or(file.db_acquire_timeout_millis)
                .unwrap_or(DEFAULT_DB_ACQUIRE_TIMEOUT_MILLIS)
                .clamp(100, 600_000),
        ),
        db_startup_timeout: Duration::from_secs(
            o.db_startup_timeout_secs
                .or(file.db_startup_timeout_secs)
                .unwrap_or(DEFAULT_DB_STARTUP_TIMEOUT_SECS),
        ),
        db_check_interval: Duration::from_secs(1),
        auth,
        tls,
    })
}

/// The span exporter: flags and `PATRON_…`, then the file, then the standard `OTEL_…` variables;
/// an empty endpoint is none.
fn resolve_otlp(file: &FileConfig, o: &Overrides) -> Option<crate::telemetry::OtlpSettings> {
    let endpoint = o
        .otlp_endpoint
        .clone()
        .or(file.otlp_endpoint.clone())
        .or(o.otel_endpoint.clone())
        .filter(|e| !e.trim().is_empty())?;
    let service_name = o
        .otlp_service_name
        .clone()
        .or(file.otlp_service_name.clone())
        .or(o.otel_service_name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
    Some(crate::telemetry::OtlpSettings {
        endpoint,
        service_name,
    })
}

/// Resolves the limits on calls in flight and open streams: each at least 1.
fn resolve_limits(file: &FileConfig, o: &Overrides) -> Result<Limits, String> {
    let d = Limits::default();
    let pick = |name: &str, flag: Option<usize>, file: Option<usize>, default: usize| {
        let v = flag.or(file).unwrap_or(default);
        if v == 0 {
            Err(format!("{name} must be at least 1"))
        } else {
            Ok(v)
        }
    };
    Ok(Limits {
        max_in_flight: pick(
            "max_in_flight",
            o.max_in_flight,
            file.max_in_flight,
            d.max_in_flight,
        )?,
        max_in_flight_per_connection: pick(
            "max_in_flight_per_connection",
            o.max_in_flight_per_connection,
            file.max_in_flight_per_connection,
            d.max_in_flight_per_connection,
        )?,
        max_streams: pick(
            "max_streams",
            o.max_streams,
            file.max_streams,
            d.max_streams,
        )?,
        max_streams_per_connection: pick(
            "max_streams_per_connection",
            o.max_streams_per_connection,
            file.max_streams_per_connection,
            d.max_streams_per_connection,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_flags_then_file_then_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\ncurrency = \"EUR\"\nlog_format = \"json\"\n",
        )
        .expect("valid toml");
        let s = resolve(
            file,
            Overrides {
                listen: Some("127.0.0.1:7000".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.currency.as_str(), "EUR");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.database_url.expose(), DEFAULT_DATABASE_URL);
    }

    #[test]
    fn index_snapshot_settings_resolve_and_bad_paths_are_refused() {
        let d = resolve(FileConfig::default(), Overrides::default()).expect("defaults");
        assert_eq!(d.index_snapshot, None);
        assert_eq!(
            d.index_snapshot_interval,
            Duration::from_secs(DEFAULT_INDEX_SNAPSHOT_SECS)
        );
        let file: FileConfig =
            toml::from_str("index_snapshot = \"/data/a.snapshot\"\nindex_snapshot_secs = 5\n")
                .expect("valid toml");
        let s = resolve(file, Overrides::default()).expect("valid");
        assert_eq!(s.index_snapshot, Some(PathBuf::from("/data/a.snapshot")));
        assert_eq!(
            s.index_snapshot_interval,
            Duration::from_secs(10),
            "at least 10 s"
        );
        let file: FileConfig =
            toml::from_str("index_snapshot = \"/data/a.snapshot\"\n").expect("valid toml");
        let s = resolve(
            file,
            Overrides {
                index_snapshot: Some("/flag/b.snapshot".into()),
                index_snapshot_secs: Some(u64::MAX),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(s.index_snapshot, Some(PathBuf::from("/flag/b.snapshot")));
        assert_eq!(s.index_snapshot_interval, Duration::from_secs(86_400));
        let dir = tempfile::tempdir().expect("dir");
        for bad in [PathBuf::new(), dir.path().to_owned()] {
            let err = resolve(
                FileConfig::default(),
                Overrides {
                    index_snapshot: Some(bad.clone()),
                    ..Default::default()
                },
            )
            .expect_err("refused");
            assert!(err.contains("index_snapshot"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
        let bad = |o: Overrides| resolve(FileConfig::default(), o).is_err();
        assert!(bad(Overrides {
            listen: Some("nowhere".into()),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            currency: Some("XYZ".into()),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            stream_batch_size: Some(0),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            max_in_flight: Some(0),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            metrics_listen: Some("9464".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn auth_and_tls_settings_resolve_and_bad_ones_are_refused() {
        let hash = patron_grpc::auth::key_hash_hex("k");
        let file: FileConfig = toml::from_str(&format!(
            "auth = true\n[[api_keys]]\nname = \"crm\"\nsha256 = \"{hash}\"\nscopes = [\"scoring:read\"]\n\
             [[client_certificates]]\nsubject = \"CN=le\"\nname = \"le\"\nscopes = [\"loyalty:read\"]\n"
        ))
        .expect("valid toml");
        let s = resolve(
            file,
            Overrides {
                api_keys: vec![format!(
                    "ops:{}:loyalty:admin,loyalty:read",
                    patron_grpc::auth::key_hash_hex("k2")
                )],
                client_certificates: vec![
                    "crm2|scoring:read,segments:read|CN=crm, O=Example".into(),
                ],
                ..Default::default()
            },
        )
        .expect("valid");
        assert!(s.auth.enabled);
        assert_eq!(s.auth.api_keys.len(), 2);
        assert!(s.auth.api_keys[1].scopes.contains("loyalty:admin"));
        assert_eq!(s.auth.certificates[1].subject, "CN=crm, O=Example");
        assert!(s.tls.is_none());
        let bad = |o: Overrides| resolve(FileConfig::default(), o).is_err();
        // Auth on without any credential source, a malformed key, an unknown scope, half a TLS
        // pair, client certificates without TLS.
        assert!(bad(Overrides {
            auth: Some(true),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            api_keys: vec!["crm:nothex:scoring:read".into()],
            ..Default::default()
        }));
        assert!(bad(Overrides {
            auth: Some(true),
            api_keys: vec![format!("crm:{hash}:scoring:everything")],
            ..Default::default()
        }));
        assert!(bad(Overrides {
            tls_cert_file: Some("cert.pem".into()),
            ..Default::default()
        }));
        assert!(bad(Overrides {
            tls_client_ca_file: Some("ca.pem".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn otlp_is_off_unless_an_endpoint_is_set() {
        let none = resolve(FileConfig::default(), Overrides::default()).expect("valid");
        assert_eq!(none.otlp, None);
        let file: FileConfig =
            toml::from_str("otlp_endpoint = \"http://file:4317\"\n").expect("valid toml");
        let s = resolve(
            file,
            Overrides {
                otel_endpoint: Some("http://otel:4317".into()),
                otel_service_name: Some("from-otel".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        let otlp = s.otlp.expect("an exporter");
        assert_eq!(otlp.endpoint, "http://file:4317");
        assert_eq!(otlp.service_name, "from-otel");
        let s = resolve(
            FileConfig::default(),
            Overrides {
                otlp_endpoint: Some("http://flag:4317".into()),
                otel_endpoint: Some("http://otel:4317".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        let otlp = s.otlp.expect("an exporter");
        assert_eq!(otlp.endpoint, "http://flag:4317");
        assert_eq!(otlp.service_name, DEFAULT_SERVICE_NAME);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("postgres://patron:hunter2@db/patron");
        assert_eq!(format!("{s:?}"), "postgres://patron:***@db/patron");
        assert_eq!(redact_url("sqlite://patron.db"), "sqlite://patron.db");
    }
}
