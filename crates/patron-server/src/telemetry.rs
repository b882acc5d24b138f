//! Tracing set-up: human or JSON lines on stderr, filtered by `log_level` (an `EnvFilter`
//! directive such as `info,patron_store_sqlite=debug`), and, when an OTLP endpoint is configured,
//! spans exported over OTLP/gRPC by a batch processor.
//!
//! The filters are per layer: `log_level` chooses what is printed; the exporter receives spans at
//! INFO and above (each call's `grpc` span and the `store.*` spans under it) and WARN/ERROR
//! events, whatever is printed. Store calls made outside any call (the change feed's polling, the
//! database check) are not exported, so an idle server sends nothing. Without an endpoint no
//! exporter, no OpenTelemetry layer and no background thread exist.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Where spans go: an OTLP/gRPC collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] (or dropping it) sends what is still
/// buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter, off the async threads (the
    /// export itself runs on them).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let done = tokio::task::spawn_blocking(move || {
                provider.shutdown_with_timeout(Duration::from_secs(5))
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "trace exporter shutdown");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
        }
    }
}

/// Installs the global subscriber without an exporter. Returns an error if the filter does not
/// parse; a second call in one process is ignored.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    init_with(format, level, None).map(|_| ())
}

/// Installs the global subscriber, exporting spans to `otlp` when given. Must run inside a Tokio
/// runtime when `otlp` is given (the exporter's connection lives there). A second call in one
/// process installs nothing and starts no exporter.
pub fn init_with(
    format: LogFormat,
    level: &str,
    otlp: Option<&OtlpSettings>,
) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?;
    // Colours only on a terminal (and not under NO_COLOR): a log file or a collector gets plain
    // text, and no call pays for escape codes around every span field.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    }
    .with_filter(filter);
    let Some(otlp) = otlp else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(Telemetry::default());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.endpoint.clone())
        .build()
        .map_err(|e| format!("OTLP endpoint {:?}: {e}", otlp.endpoint))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(otlp.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("patron");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(DynFilterFn::new(|meta, cx| {
            if meta.is_event() {
                return *meta.level() <= Level::WARN;
            }
            *meta.level() <= Level::INFO
                && (!meta.name().starts_with("store.") || cx.lookup_current().is_some())
        }));
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_err()
    {
        let _ = provider.shutdown();
        return Ok(Telemetry::default());
    }
    tracing::info!(endpoint = %otlp.endpoint, service = %otlp.service_name, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}
