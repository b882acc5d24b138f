//! Wiring: open the store, build the gRPC server with health, reflection and limits, serve until
//! a shutdown signal, then drain.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use patron_customers::CustomerApi;
use patron_feed::layer::ConsistencyLayer;
use patron_feed::{Feed, FeedView};
use patron_loyalty::Earner;
use patron_loyalty::LoyaltyApi;
use patron_proto::customers::v1::customer_service_server::{
    CustomerServiceServer, SERVICE_NAME as CUSTOMERS,
};
use patron_proto::loyalty::v1::loyalty_service_server::{
    LoyaltyServiceServer, SERVICE_NAME as LOYALTY,
};
use patron_proto::scoring::v1::scoring_service_server::{
    SERVICE_NAME as SCORING, ScoringServiceServer,
};
use patron_proto::segmentation::v1::segmentation_service_server::{
    SERVICE_NAME as SEGMENTATION, SegmentationServiceServer,
};
use patron_scoring::service::ScoringApi;
use patron_segmentation::SegmentationApi;
use patron_store::Store;
use patron_store_postgres::PgStore;
use patron_store_sqlite::SqliteStore;
use patron_views::engine::{Engine, LoadedFrom};
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::config::{Settings, redact_url};
use crate::snapshots::IndexSnapshots;

/// Services whose health is reported, besides the whole server ("").
pub const SERVICES: [&str; 4] = [CUSTOMERS, SCORING, SEGMENTATION, LOYALTY];

/// Why the application could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("unsupported database URL {0:?}: use sqlite://FILE or postgres://…")]
    UnsupportedDatabase(String),
    #[error("storage: {0}")]
    Store(#[from] patron_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Opens the store named by `url` and applies its migrations.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, AppError> {
    open_store_with(
        url,
        patron_store_postgres::PgSettings::default(),
        std::time::Duration::ZERO,
    )
    .await
}

/// Opens the store named by `url` with Postgres pool settings and applies its migrations; while
/// the database is unreachable, retries with backoff (each attempt logged) for up to
/// `startup_timeout`.
pub async fn open_store_with(
    url: &str,
    pg: patron_store_postgres::PgSettings,
    startup_timeout: std::time::Duration,
) -> Result<Arc<dyn Store>, AppError> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = crate::ops::retry_connect("database", startup_timeout, || async {
            let store = PgStore::connect_with(url, pg).await?;
            store.migrate().await?;
            Ok(store)
        })
        .await?;
        Ok(Arc::new(store))
    } else {
        Err(AppError::UnsupportedDatabase(redact_url(url)))
    }
}

/// Paths of streaming methods in the encoded descriptor sets: exempt from the unary deadline.
fn streaming_paths(sets: &[&[u8]]) -> HashSet<String> {
    let mut out = HashSet::new();
    for bytes in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*bytes) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for m in service.method {
                    if m.client_streaming() || m.server_streaming() {
                        out.insert(format!(
                            "/{package}.{service_name}/{}",
                            m.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    out
}

/// A built, bound application, ready to serve.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Settings,
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    segmentation: SegmentationApi,
    loyalty: LoyaltyApi,
    feed: Arc<Feed>,
    /// The feed follower, the loyalty earner and the snapshot writer: aborted when the server
    /// stops.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The index snapshot, when `index_snapshot` is set: written once more at shutdown.
    snapshots: Option<Arc<IndexSnapshots>>,
    /// TLS on the port, when configured.
    tls: Option<crate::tls::TlsAcceptor>,
    health: HealthReporter,
    health_service: HealthServer<HealthService>,
    /// The metrics listener and recorder, when `metrics_listen` is set.
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

async fn set_all(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for s in SERVICES {
        health.set_service_status(s, status).await;
    }
}

impl Application {
    /// Opens and migrates the store, then binds the listener. Health reports NOT_SERVING until
    /// [`Application::run_until_stopped`] starts serving.
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let store = open_store_with(
            settings.database_url.expose(),
            patron_store_postgres::PgSettings {
                acquire_timeout: settings.db_acquire_timeout,
                ..patron_store_postgres::PgSettings::default()
            },
            settings.db_startup_timeout,
        )
        .await?;
        // The metrics address is bound before anything else listens: a bad address stops the
        // start.
        let metrics = match settings.metrics_listen {
            Some(addr) => {
                let listener = crate::ops::bind_metrics(addr)
                    .await
                    .map_err(|source| AppError::Bind { addr, source })?;
                let handle = crate::ops::recorder().ok_or_else(|| {
                    AppError::Metrics("the metrics recorder could not be installed".into())
                })?;
                Some((listener, handle))
            }
            None => None,
        };
        // The feed position before any view loads: views loaded after it hold everything up to
        // it, so following the feed from there misses nothing.
        let start = Feed::start_position(store.as_ref()).await?;
        let (engine, loaded_from) = Engine::load_from(
            Arc::clone(&store),
            settings.currency,
            settings.index_snapshot.as_deref(),
            start,
        )
        .await?;
        let segmentation = SegmentationApi::load(
            Arc::clone(&engine),
            patron_segmentation::Settings {
                refresh_interval: settings.segment_refresh,
            },
        )
        .await?;
        let loyalty = LoyaltyApi::load(
            Arc::clone(&store),
            Arc::clone(&engine),
            segmentation.clone(),
            settings.currency,
            patron_loyalty::Settings {
                expiry_interval: settings.loyalty_expiry_interval,
            },
        )
        .await?;
        // The change feed is the only way views learn of changes, in this process and every
        // other: the scoring index first, then segment definitions and watchers (which read the
        // index), then the loyalty view.
        let views: Vec<Arc<dyn FeedView>> = vec![
            Arc::clone(&engine) as Arc<dyn FeedView>,
            Arc::new(segmentation.clone()),
            loyalty.view(),
        ];
        let (feed, feed_task) = Feed::start(
            Arc::clone(&store),
            start,
            views,
            patron_feed::Settings {
                poll_interval: settings.feed_poll,
                retention: settings.feed_retention,
                ..patron_feed::Settings::default()
            },
        )
        .await?;
        let (_earner, earner_task) =
            Earner::spawn(loyalty.clone(), Arc::clone(&feed), settings.earner_lease).await;
        let snapshots = settings.index_snapshot.clone().map(|path| {
            let written = match loaded_from {
                LoadedFrom::Snapshot { position, .. } => Some(position),
                LoadedFrom::Database => None,
            };
            Arc::new(IndexSnapshots::new(
                path,
                Arc::clone(&engine),
                Arc::clone(&feed),
                written,
            ))
        });
        let mut tasks = vec![feed_task, earner_task];
        if let Some(s) = &snapshots {
            tasks.push(Arc::clone(s).spawn(settings.index_snapshot_interval));
        }
        // Certificate problems stop the start, before anything listens.
        let tls = match &settings.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(AppError::Tls)?),
            None => None,
        };
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| AppError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: settings.listen,
            source,
        })?;
        let health = HealthReporter::new();
        let health_service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
        set_all(&health, ServingStatus::NotServing).await;
        tracing::info!(backend = store.backend(), database = ?settings.database_url, "storage ready, migrations applied");
        Ok(Self {
            listener,
            local_addr,
            settings,
            store,
            engine,
            segmentation,
            loyalty,
            feed,
            tasks,
            snapshots,
            tls,
            health,
            health_service,
            metrics,
        })
    }

    /// The bound metrics address, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store the application serves from.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// This process's change feed follower.
    pub fn feed(&self) -> Arc<Feed> {
        Arc::clone(&self.feed)
    }

    /// The scoring engine: the in-memory index, the active model, model fitting.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// Serves until `shutdown` completes, then reports NOT_SERVING, waits the configured grace
    /// period, stops accepting calls and lets in-flight calls finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Self {
            listener,
            local_addr,
            settings,
            store,
            engine,
            segmentation,
            loyalty,
            feed,
            tasks,
            snapshots,
            tls,
            health,
            health_service,
            metrics,
        } = self;
        // google.rpc's error details too, so reflection clients (buf curl, grpcurl) show an
        // error's ErrorInfo, BadRequest and RetryInfo as text.
        let reflection_sets: [&[u8]; 3] = [
            patron_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
        ];
        let mut reflection = tonic_reflection::server::Builder::configure();
        for set in reflection_sets {
            reflection = reflection.register_encoded_file_descriptor_set(set);
        }
        let reflection_v1 = reflection.build_v1()?;
        let mut reflection = tonic_reflection::server::Builder::configure();
        for set in reflection_sets {
            reflection = reflection.register_encoded_file_descriptor_set(set);
        }
        let reflection_v1alpha = reflection.build_v1alpha()?;

        let auth = Arc::new(
            patron_grpc::auth::Authenticator::new(&settings.auth).map_err(AppError::Auth)?,
        );
        if !auth.enabled() && !local_addr.ip().is_loopback() {
            tracing::warn!(
                %local_addr,
                "AUTHENTICATION IS OFF on a non-loopback address: anyone who can reach this port \
                 can read every customer, erase customers and credit points. Turn it on with \
                 --auth and API keys, JWTs or client certificates (README, \"Authentication and TLS\")."
            );
        }
        let mut streaming = streaming_paths(&reflection_sets);
        streaming.insert("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
        streaming.insert("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());

        let customers = CustomerApi::new(
            Arc::clone(&store),
            patron_customers::Settings {
                currency: settings.currency,
                stream_batch_size: settings.stream_batch_size,
            },
        )
        // Order matters: the scoring index refreshes first, then segment watchers read it.
;
        let expiry = loyalty.spawn_expiry();
        let customers = CustomerServiceServer::new(customers)
            .max_decoding_message_size(settings.max_message_bytes)
            .max_encoding_message_size(settings.max_message_bytes);

        let admission =
            patron_grpc::admission::AdmissionLayer::new(settings.limits, streaming.clone());
        let mut served_paths: Vec<String> = patron_grpc::methods::METHODS
            .iter()
            .map(|m| m.path.to_owned())
            .collect();
        served_paths.extend(streaming.iter().cloned());
        served_paths.push("/grpc.health.v1.Health/Check".into());
        served_paths.push("/grpc.health.v1.Health/Watch".into());
        let observe = patron_grpc::observe::ObserveLayer::new(
            served_paths,
            streaming.clone(),
            metrics.is_some(),
        );
        let mut ops_tasks = vec![tokio::spawn(crate::ops::watch_database(
            Arc::clone(&store),
            health.clone(),
            settings.db_check_interval,
            settings.db_acquire_timeout,
        ))];
        if let Some((listener, handle)) = metrics {
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics at /metrics");
            ops_tasks.push(tokio::spawn(crate::ops::serve_metrics(
                listener,
                handle,
                crate::ops::Sampled {
                    store: Arc::clone(&store),
                    engine: Arc::clone(&engine),
                    feed: Arc::clone(&feed),
                    admission: admission.gauges(),
                },
            )));
        }

        let router = Server::builder()
            .layer(patron_grpc::trace::TraceLayer::new(settings.otlp.is_some()))
            .layer(observe)
            .layer(admission)
            .layer(patron_grpc::deadline::DeadlineLayer::new(
                settings.request_timeout,
                streaming,
            ))
            .layer(patron_grpc::auth::AuthLayer::new(auth))
            .layer(ConsistencyLayer::new(
                Arc::clone(&feed),
                settings.request_timeout,
            ))
            // Innermost, so metrics and traces see the rewritten code.
            .layer(patron_grpc::wire::WireErrorLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(customers)
            .add_service(
                ScoringServiceServer::new(ScoringApi::new(engine))
                    .max_decoding_message_size(settings.max_message_bytes)
                    .max_encoding_message_size(settings.max_message_bytes),
            )
            .add_service(
                SegmentationServiceServer::new(segmentation)
                    .max_decoding_message_size(settings.max_message_bytes)
                    .max_encoding_message_size(settings.max_message_bytes),
            )
            .add_service(
                LoyaltyServiceServer::new(loyalty)
                    .max_decoding_message_size(settings.max_message_bytes)
                    .max_encoding_message_size(settings.max_message_bytes),
            );

        set_all(&health, ServingStatus::Serving).await;
        tracing::info!(%local_addr, tls = settings.tls.is_some(), auth = settings.auth.enabled, "patron serving");
        let grace = settings.shutdown_grace;
        let drain_timeout = settings.drain_timeout;
        let drain_health = health.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            // The database watch must not report SERVING again while draining.
            for t in &ops_tasks {
                t.abort();
            }
            let _ = stopping_tx.send(());
            tracing::info!("shutting down: reporting NOT_SERVING, draining in-flight calls");
            set_all(&drain_health, ServingStatus::NotServing).await;
            if !grace.is_zero() {
                tokio::time::sleep(grace).await;
            }
        };
        // Either transport sets TCP_NODELAY and gives each connection its ConnectionPeer.
        let serve: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match tls {
            Some(tls) => {
                Box::pin(router.serve_with_incoming_shutdown(tls.incoming(listener), signal))
            }
            None => Box::pin(
                router.serve_with_incoming_shutdown(crate::conn::incoming(listener), signal),
            ),
        };
        // Calls that never end (a health Watch, a stuck stream) must not hold the process forever.
        let deadline = async move {
            if stopping_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace + drain_timeout).await;
        };
        tokio::select! {
            result = serve => result?,
            () = deadline => tracing::warn!(?drain_timeout, "drain timeout: closing calls still open"),
        }
        expiry.abort();
        for t in tasks {
            t.abort();
        }
        // The next start reads this instead of every customer. A periodic write in progress
        // holds the lock; this one then finds nothing new or writes after it.
        if let Some(s) = snapshots {
            s.write_if_moved().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: the accept loop may first poll its shutdown future after it has
/// already served a call, and a SIGTERM before then would kill the process instead of draining it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let wait = |installed: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
            match installed {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        };
        let interrupt = wait(signal(SignalKind::interrupt()), "SIGINT");
        let terminate = wait(signal(SignalKind::terminate()), "SIGTERM");
        async move {
            tokio::select! {
                () = interrupt => {},
                () = terminate => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A SIGTERM that arrives after `shutdown_signal()` is called but before its future is first
    /// polled completes the future; were the handler installed only at the first poll, the
    /// signal would kill this test process.
    #[tokio::test]
    async fn sigterm_before_the_first_poll_is_caught() {
        let stop = shutdown_signal();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).expect("raise");
        tokio::time::timeout(std::time::Duration::from_secs(5), stop)
            .await
            .expect("the signal completes the future");
    }
}
