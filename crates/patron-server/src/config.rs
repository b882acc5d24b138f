//! Configuration: defaults, then a TOML file, then `PATRON_…` environment variables, then
//! command-line flags (later wins). clap merges flags and environment; the file fills the rest.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use patron_domain::Currency;
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
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://patron.db";
pub const DEFAULT_LOG_LEVEL: &str = "info,sqlx=warn";
/// Largest StreamEvents transaction; bounds the events a stream holds in memory (a few batches).
pub const MAX_STREAM_BATCH_SIZE: usize = 100_000;
/// Change feed polling (the fallback on Postgres, where notifications wake readers at once).
pub const DEFAULT_FEED_POLL_MILLIS: u64 = 200;
/// Change feed retention.
pub const DEFAULT_FEED_RETENTION_SECS: u64 = 3600;
/// Loyalty earner lease.
pub const DEFAULT_EARNER_LEASE_SECS: u64 = 15;

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
}

/// Resolves settings: overrides first, then the file, then defaults.
pub fn resolve(file: FileConfig, o: Overrides) -> Result<Settings, String> {
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
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("postgres://patron:hunter2@db/patron");
        assert_eq!(format!("{s:?}"), "postgres://patron:***@db/patron");
        assert_eq!(redact_url("sqlite://patron.db"), "sqlite://patron.db");
    }
}
