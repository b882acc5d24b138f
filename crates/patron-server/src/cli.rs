//! The command line: `patron serve`, `patron migrate`, `patron import`, `patron demo`,
//! `patron generate`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, FileConfig, LogFormat, Overrides, Settings};
use crate::{app, demo, generate, import, telemetry};

/// Patron: customer value over gRPC.
///
/// Patron tells other backends what a customer is worth to the business and what the business is
/// worth to the customer, from the customers and events they record. It serves gRPC with health
/// checks and reflection, backed by SQLite (default, a file in the working directory) or Postgres.
///
/// Every option can also be set in a TOML file (--config) or as a PATRON_… environment variable;
/// flags win over the environment, which wins over the file.
///
/// The process runs without transparent huge pages unless MIMALLOC_ALLOW_THP is set (=1 keeps
/// the machine's setting); README, "Operations", says why.
#[derive(Debug, Parser)]
#[command(name = "patron", version)]
pub struct Cli {
    /// TOML configuration file; its keys are the long option names of these global options and
    /// of `patron serve --help`, with underscores (database_url for --database, e.g. listen,
    /// segment_refresh_secs, loyalty_expiry_interval_secs); README, "Configuration", lists
    /// every key.
    #[arg(long, env = "PATRON_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Database URL: sqlite://FILE (created if missing) or postgres://USER:PASSWORD@HOST/DB.
    /// [default: sqlite://patron.db]
    #[arg(
        long = "database",
        env = "PATRON_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Log format. [default: human]
    #[arg(long, env = "PATRON_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `info,patron_customers=debug`; `info,patron_grpc::trace=debug`
    /// names the call (`grpc{method=…}`) on every line logged during one, not only on calls that
    /// carry `traceparent`. [default: info,sqlx=warn]
    #[arg(long, env = "PATRON_LOG", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// ISO 4217 currency the books are kept in; money in any other currency is refused.
    /// [default: USD]
    #[arg(long, env = "PATRON_CURRENCY", global = true, value_name = "CODE")]
    pub currency: Option<String>,

    /// Export traces over OTLP/gRPC to this collector, e.g. http://otel-collector:4317: a span
    /// per call (the child of the caller's W3C `traceparent`) and one per database call under
    /// it. Off unless set; OTEL_EXPORTER_OTLP_ENDPOINT is honoured too. Log lines carry the
    /// trace id either way when a call brings a `traceparent`.
    #[arg(long, env = "PATRON_OTLP_ENDPOINT", global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// The `service.name` of exported spans (else OTEL_SERVICE_NAME). [default: patron]
    #[arg(
        long,
        env = "PATRON_OTLP_SERVICE_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub otlp_service_name: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Apply migrations and serve gRPC until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Load customers and transactions from CSV files into the database, then exit.
    Import(ImportArgs),
    /// Generate a realistic demo data set, fit the value models and serve it.
    ///
    /// Simulates N customers (--customers) over the last two years: profiles, purchases (a BG/NBD
    /// purchase process with Gamma-Gamma order values), refunds, engagement, surveys, support
    /// contacts and custom events, the same for the same --seed. Loads them, fits a value model,
    /// prints example `buf curl` calls with real customer ids and serves gRPC until SIGINT or
    /// SIGTERM.
    ///
    /// The data goes to sqlite://patron-demo.db in the working directory (not the patron.db of
    /// `serve`) unless --database, PATRON_DATABASE_URL or the config file names another. A
    /// database that already holds customers is never changed by generation: the demo says so
    /// and serves what is there. Delete patron-demo.db to start afresh.
    Demo(DemoArgs),
    /// Generate a seeded data set of any size into the database or as CSV, then exit.
    ///
    /// The demo's simulation (see `patron demo --help`) for N customers: about 12 events per
    /// customer in all (2.5 purchases), the same for the same --seed and --now. Without --csv it
    /// writes straight into the database (--database; default sqlite://patron.db) through the
    /// store in batches of 20,000 events; writing the same data set again adds nothing. With
    /// --csv DIR it writes DIR/customers.csv and DIR/transactions.csv (purchases) for `patron
    /// import`, and DIR/generate.json with the seed, the observation end and the counts.
    Generate(GenerateArgs),
    /// Print the SHA-256 of an API key, for --api-key / [[api_keys]] (the configuration never
    /// holds keys themselves).
    ///
    /// Reads the key from standard input (one line), or with --generate makes a new random key
    /// and prints it once, then its hash.
    HashKey(HashKeyArgs),
}

#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// Generate a new random key (256 bits, hex) instead of reading one.
    #[arg(long)]
    pub generate: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. [default: 127.0.0.1:50051]
    #[arg(long, env = "PATRON_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Deadline for unary calls that carry none of their own, in seconds. Streaming calls are
    /// bounded only by the client's deadline. [default: 30]
    #[arg(long, env = "PATRON_REQUEST_TIMEOUT_SECS", value_name = "SECS")]
    pub request_timeout_secs: Option<u64>,

    /// Largest request or response message, in bytes. [default: 16777216]
    #[arg(long, env = "PATRON_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Events StreamEvents commits per transaction, 1 to 100000. Larger batches load faster;
    /// memory holds about three batches per stream. [default: 20000]
    #[arg(long, env = "PATRON_STREAM_BATCH_SIZE", value_name = "N")]
    pub stream_batch_size: Option<usize>,

    /// On shutdown, seconds to keep serving while health reports NOT_SERVING, so load
    /// balancers stop sending new calls first. [default: 0]
    #[arg(long, env = "PATRON_SHUTDOWN_GRACE_SECS", value_name = "SECS")]
    pub shutdown_grace_secs: Option<u64>,

    /// After the grace period, seconds to let in-flight calls finish before closing them.
    /// [default: 30]
    #[arg(long, env = "PATRON_DRAIN_TIMEOUT_SECS", value_name = "SECS")]
    pub drain_timeout_secs: Option<u64>,

    /// Seconds between full re-checks by WatchSegment streams (to pick up new models and tier
    /// policies; they also re-check when the UTC day changes). [default: 60]
    #[arg(long, env = "PATRON_SEGMENT_REFRESH_SECS", value_name = "SECS")]
    pub segment_refresh_secs: Option<u64>,

    /// Seconds between runs of the loyalty expiry task, which writes EXPIRE entries for points
    /// past their expiry and ACTIVATE entries for points past their return window (balances
    /// never count expired points, whenever the task runs). [default: 60]
    #[arg(long, env = "PATRON_LOYALTY_EXPIRY_INTERVAL_SECS", value_name = "SECS")]
    pub loyalty_expiry_interval_secs: Option<u64>,

    /// Milliseconds between reads of the change feed when nothing woke this server. On Postgres,
    /// LISTEN/NOTIFY wakes every replica at once and this is the fallback; on SQLite it is how
    /// writes of other processes (`patron import`, `patron generate`) are seen. [default: 200]
    #[arg(long, env = "PATRON_FEED_POLL_MILLIS", value_name = "MILLIS")]
    pub feed_poll_millis: Option<u64>,

    /// Seconds a change stays in the change feed after every live server has applied it; a
    /// server that was stopped longer reloads its views from the database on start-up anyway,
    /// and one that falls further behind while running reloads them. [default: 3600]
    #[arg(long, env = "PATRON_FEED_RETENTION_SECS", value_name = "SECS")]
    pub feed_retention_secs: Option<u64>,

    /// Seconds the loyalty earner's lease lasts: one replica at a time earns points from the
    /// change feed; when it dies, another takes over after at most this long. [default: 15]
    #[arg(long, env = "PATRON_EARNER_LEASE_SECS", value_name = "SECS")]
    pub earner_lease_secs: Option<u64>,

    /// A file on local disk for a copy of the in-memory index (every customer's summary), e.g.
    /// /var/lib/patron/index.snapshot. At start-up the server reads it and re-reads from the
    /// database only the customers changed since, instead of every customer: at millions of
    /// customers, seconds instead of minutes. It is rewritten every --index-snapshot-secs while
    /// data changes, after a start that read the database, and at shutdown. A snapshot of
    /// another database, older than the change feed keeps (--feed-retention-secs) or damaged is
    /// ignored and the database read instead. Each replica needs its own file. Off unless set.
    #[arg(long, env = "PATRON_INDEX_SNAPSHOT", value_name = "PATH")]
    pub index_snapshot: Option<PathBuf>,

    /// Seconds between rewrites of the index snapshot (10 to 86400; only when something
    /// changed). [default: 600]
    #[arg(long, env = "PATRON_INDEX_SNAPSHOT_SECS", value_name = "SECS")]
    pub index_snapshot_secs: Option<u64>,

    /// Address of the Prometheus metrics endpoint (plain HTTP, `GET /metrics`), e.g.
    /// 0.0.0.0:9464. Off unless set. README, "Operations", lists the metrics.
    #[arg(long, env = "PATRON_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Unary calls in flight at once, server-wide. A call past the limit is refused at once with
    /// RESOURCE_EXHAUSTED and a RetryInfo delay, never queued. Health checks and reflection are
    /// never refused. [default: 512]
    #[arg(long, env = "PATRON_MAX_IN_FLIGHT", value_name = "N")]
    pub max_in_flight: Option<usize>,

    /// Unary calls in flight at once on one connection. [default: 256]
    #[arg(long, env = "PATRON_MAX_IN_FLIGHT_PER_CONNECTION", value_name = "N")]
    pub max_in_flight_per_connection: Option<usize>,

    /// Streaming calls open at once, server-wide (StreamCustomerValues, StreamEvents,
    /// WatchSegment). Past it a new stream is refused at once with RESOURCE_EXHAUSTED.
    /// [default: 256]
    #[arg(long, env = "PATRON_MAX_STREAMS", value_name = "N")]
    pub max_streams: Option<usize>,

    /// Streaming calls open at once on one connection. [default: 64]
    #[arg(long, env = "PATRON_MAX_STREAMS_PER_CONNECTION", value_name = "N")]
    pub max_streams_per_connection: Option<usize>,

    /// Milliseconds a call waits for a database connection before failing with UNAVAILABLE.
    /// While the database is unreachable calls fail at once and health reports NOT_SERVING; a
    /// check every second notices its return. [default: 2000]
    #[arg(long, env = "PATRON_DB_ACQUIRE_TIMEOUT_MILLIS", value_name = "MILLIS")]
    pub db_acquire_timeout_millis: Option<u64>,

    /// Seconds `serve` keeps trying to reach the database at start-up, logging each failed
    /// attempt and retrying with backoff, before it gives up. [default: 60]
    #[arg(long, env = "PATRON_DB_STARTUP_TIMEOUT_SECS", value_name = "SECS")]
    pub db_startup_timeout_secs: Option<u64>,

    /// Require a credential on every call to Patron's services (API key, JWT or client
    /// certificate) and check the method's scope; health checks and reflection stay open.
    /// Without it every caller may do everything: a warning says so at start-up when the
    /// address is not loopback. [default: false]
    #[arg(long, env = "PATRON_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auth: Option<bool>,

    /// An API key as NAME:SHA256:SCOPE,SCOPE… — the SHA-256 (hex) of the key, never the key
    /// (`patron hash-key` prints it). Repeat for more keys; in PATRON_API_KEYS separate them with
    /// `;`. Scopes: customers:read, customers:write, customers:erase, scoring:read,
    /// scoring:admin, segments:read, segments:write, loyalty:read, loyalty:enroll,
    /// loyalty:redeem, loyalty:admin.
    #[arg(
        long = "api-key",
        env = "PATRON_API_KEYS",
        value_name = "NAME:SHA256:SCOPES",
        value_delimiter = ';',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// JWKS file (`{"keys": [...]}`) whose keys verify bearer JWTs.
    #[arg(long, env = "PATRON_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// PEM public key (RSA, EC P-256 or Ed25519) that verifies bearer JWTs; repeatable.
    #[arg(
        long = "jwt-public-key-file",
        env = "PATRON_JWT_PUBLIC_KEY_FILES",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub jwt_public_key_files: Vec<PathBuf>,

    /// Required `iss` of JWTs.
    #[arg(long, env = "PATRON_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of JWTs.
    #[arg(long, env = "PATRON_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`, in seconds. [default: 60]
    #[arg(long, env = "PATRON_JWT_LEEWAY_SECS", value_name = "SECS")]
    pub jwt_leeway_secs: Option<u64>,

    /// The JWT claim holding the scopes (a space-separated string or a list). [default: scope]
    #[arg(long, env = "PATRON_JWT_SCOPE_CLAIM", value_name = "CLAIM")]
    pub jwt_scope_claim: Option<String>,

    /// Whether server reflection answers without a credential when --auth is on.
    /// [default: true]
    #[arg(long, env = "PATRON_AUTH_OPEN_REFLECTION", value_name = "BOOL")]
    pub auth_open_reflection: Option<bool>,

    /// Serve TLS with this certificate chain (PEM); reloaded when the file changes or on
    /// SIGHUP, without dropping connections.
    #[arg(long, env = "PATRON_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "PATRON_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// CA certificates (PEM) that sign client certificates (mutual TLS); read at start-up.
    /// Map certificate subjects to principals in the config file ([[client_certificates]]).
    #[arg(long, env = "PATRON_TLS_CLIENT_CA_FILE", value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// A client certificate subject as a principal: NAME|SCOPE,SCOPE…|SUBJECT, the subject as
    /// Patron prints it (e.g. `CN=loyalty-engine` or `CN=crm, O=Example`). Repeat for more; in
    /// PATRON_CLIENT_CERTIFICATES separate them with `;`.
    #[arg(
        long = "client-certificate",
        env = "PATRON_CLIENT_CERTIFICATES",
        value_name = "NAME|SCOPES|SUBJECT",
        value_delimiter = ';'
    )]
    pub client_certificates: Vec<String>,

    /// Whether clients must present a certificate. [default: optional]
    #[arg(long, env = "PATRON_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<config::ClientAuthMode>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CSV of customers: a header row with customer_id and optionally birth_date (YYYY-MM-DD),
    /// gender, country (ISO 3166-1 alpha-2), signed_up_at.
    #[arg(long, value_name = "FILE")]
    pub customers: Option<PathBuf>,

    /// CSV of transactions: a header row with customer_id, timestamp (or date: YYYY-MM-DD,
    /// YYYYMMDD, RFC 3339 with Z or an offset, or Unix seconds), amount (decimal in major units, e.g. 19.99) and
    /// optionally order_id. Each row is a purchase; importing a file again loads nothing twice.
    #[arg(long, value_name = "FILE")]
    pub transactions: Option<PathBuf>,

    /// The zone of timestamps that carry none (`2024-05-01 14:30:00`): UTC, +HH:MM or -HH:MM.
    /// Without it such rows are rejected, each with its line, rather than guessed as UTC.
    /// Timestamps with `Z` or an offset keep their own; dates (YYYY-MM-DD) are UTC days.
    #[arg(
        long,
        value_name = "OFFSET",
        allow_hyphen_values = true,
        value_parser = import::parse_offset
    )]
    pub assume_timezone: Option<i64>,

    /// Rows per transaction.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Customers to generate, 1 to 1000000 (about 12 events each).
    #[arg(
        long,
        value_name = "N",
        default_value_t = demo::DEFAULT_CUSTOMERS,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub customers: u32,

    /// Seed of the generator: the same seed gives the same data set.
    #[arg(long, value_name = "S", default_value_t = demo::DEFAULT_SEED)]
    pub seed: u64,

    /// Address to listen on. [default: 127.0.0.1:50051]
    #[arg(long, env = "PATRON_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Customers to generate, 1 to 10000000 (ids cust-000001, cust-000002, …).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=10_000_000)
    )]
    pub customers: u32,

    /// Seed of the generator: the same seed (and --now) gives the same data set.
    #[arg(long, value_name = "S", default_value_t = demo::DEFAULT_SEED)]
    pub seed: u64,

    /// The observation end: every event lies at or before it (RFC 3339 or YYYY-MM-DD).
    /// [default: the current time, whole seconds]
    #[arg(long, value_name = "INSTANT")]
    pub now: Option<String>,

    /// Which events to generate.
    #[arg(long, value_enum, default_value_t = generate::EventSelection::All)]
    pub events: generate::EventSelection,

    /// Stop after the customer whose events bring the total to N (fewer customers then).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=10_000_000)
    )]
    pub max_events: Option<u64>,

    /// Write CSV files into this directory instead of the database.
    #[arg(long, value_name = "DIR")]
    pub csv: Option<PathBuf>,
}

/// Resolves settings from the command line, environment and config file.
pub fn settings(cli: &Cli) -> Result<Settings, String> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mut o = Overrides {
        database_url: cli.database_url.clone(),
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
        currency: cli.currency.clone(),
        otlp_endpoint: cli.otlp_endpoint.clone(),
        otlp_service_name: cli.otlp_service_name.clone(),
        otel_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
        otel_service_name: std::env::var("OTEL_SERVICE_NAME").ok(),
        ..Overrides::default()
    };
    if let Command::Serve(s) = &cli.command {
        o.listen = s.listen.clone();
        o.request_timeout_secs = s.request_timeout_secs;
        o.max_message_bytes = s.max_message_bytes;
        o.stream_batch_size = s.stream_batch_size;
        o.shutdown_grace_secs = s.shutdown_grace_secs;
        o.drain_timeout_secs = s.drain_timeout_secs;
        o.segment_refresh_secs = s.segment_refresh_secs;
        o.loyalty_expiry_interval_secs = s.loyalty_expiry_interval_secs;
        o.feed_poll_millis = s.feed_poll_millis;
        o.feed_retention_secs = s.feed_retention_secs;
        o.earner_lease_secs = s.earner_lease_secs;
        o.index_snapshot = s.index_snapshot.clone();
        o.index_snapshot_secs = s.index_snapshot_secs;
        o.metrics_listen = s.metrics_listen.clone();
        o.max_in_flight = s.max_in_flight;
        o.max_in_flight_per_connection = s.max_in_flight_per_connection;
        o.max_streams = s.max_streams;
        o.max_streams_per_connection = s.max_streams_per_connection;
        o.db_acquire_timeout_millis = s.db_acquire_timeout_millis;
        o.db_startup_timeout_secs = s.db_startup_timeout_secs;
        o.auth = s.auth;
        o.api_keys = s.api_keys.clone();
        o.jwt_jwks_file = s.jwt_jwks_file.clone();
        o.jwt_public_key_files = s.jwt_public_key_files.clone();
        o.jwt_issuer = s.jwt_issuer.clone();
        o.jwt_audience = s.jwt_audience.clone();
        o.jwt_leeway_secs = s.jwt_leeway_secs;
        o.jwt_scope_claim = s.jwt_scope_claim.clone();
        o.auth_open_reflection = s.auth_open_reflection;
        o.tls_cert_file = s.tls_cert_file.clone();
        o.tls_key_file = s.tls_key_file.clone();
        o.tls_client_ca_file = s.tls_client_ca_file.clone();
        o.tls_client_auth = s.tls_client_auth;
        o.client_certificates = s.client_certificates.clone();
    }
    if let Command::Demo(d) = &cli.command {
        o.listen = d.listen.clone();
        if o.database_url.is_none() && file.database_url.is_none() {
            o.database_url = Some(demo::DEMO_DATABASE_URL.into());
        }
    }
    config::resolve(file, o)
}

/// Runs a parsed command line.
#[allow(clippy::print_stdout)] // The CLI's reports are its output.
pub async fn run(cli: Cli) -> Result<(), String> {
    let settings = settings(&cli)?;
    let telemetry = telemetry::init_with(
        settings.log_format,
        &settings.log_level,
        settings.otlp.as_ref(),
    )?;
    let result = command(cli.command, settings).await;
    // The spans still buffered go out before the process ends.
    telemetry.shutdown().await;
    result
}

/// Runs one command with resolved settings.
#[allow(clippy::print_stdout)] // The CLI's reports are its output.
async fn command(command: Command, settings: Settings) -> Result<(), String> {
    match command {
        Command::Serve(_) => {
            let app = app::Application::build(settings)
                .await
                .map_err(|e| e.to_string())?;
            app.run_until_stopped(app::shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => {
            app::open_store(settings.database_url.expose())
                .await
                .map_err(|e| e.to_string())?;
            println!("migrations applied to {:?}", settings.database_url);
            Ok(())
        }
        Command::Import(args) => {
            if args.customers.is_none() && args.transactions.is_none() {
                return Err(
                    "nothing to import: give --customers FILE and/or --transactions FILE".into(),
                );
            }
            let store = app::open_store(settings.database_url.expose())
                .await
                .map_err(|e| e.to_string())?;
            let mut summary = import::ImportSummary::default();
            let started = std::time::Instant::now();
            if let Some(path) = &args.customers {
                import::import_customers(&store, path, args.assume_timezone, &mut summary).await?;
            }
            if let Some(path) = &args.transactions {
                import::import_transactions(
                    &store,
                    path,
                    settings.currency,
                    args.batch_size as usize,
                    args.assume_timezone,
                    &mut summary,
                )
                .await?;
            }
            print!("{}", summary.render());
            println!("took {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Demo(args) => demo::run(settings, args.customers as usize, args.seed).await,
        Command::HashKey(args) => {
            let key = if args.generate {
                let bytes: [u8; 32] = rand::random();
                let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                println!("key:    {key}");
                key
            } else {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| format!("reading the key from standard input: {e}"))?;
                let key = line.trim_end_matches(['\n', '\r']).to_owned();
                if key.is_empty() {
                    return Err("no key on standard input".into());
                }
                key
            };
            println!("sha256: {}", patron_grpc::auth::key_hash_hex(&key));
            Ok(())
        }
        Command::Generate(args) => {
            let now = match &args.now {
                Some(s) => import::parse_instant(s).map_err(|e| format!("--now: {e}"))?,
                None => {
                    let us = patron_grpc::time::now().as_micros();
                    patron_domain::Timestamp::from_micros(us - us.rem_euclid(1_000_000))
                }
            };
            let plan = generate::Plan {
                customers: args.customers as usize,
                seed: args.seed,
                now,
                events: args.events,
                max_events: args.max_events,
            };
            generate::run(&settings, plan, args.csv.as_deref()).await
        }
    }
}
