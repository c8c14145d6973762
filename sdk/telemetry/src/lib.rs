//! `silt-telemetry`: how Silt's programs log and trace, and how a trace follows a record.
//!
//! [`init`] installs the process's `tracing` subscriber: human-readable or JSON log lines on
//! stderr (filtered by `RUST_LOG`, default `info`, openraft's `error`), and, when an OTLP endpoint is given,
//! OpenTelemetry spans exported over OTLP/HTTP (protobuf) in batches.
//!
//! The trace context travels in a record header named [`TRACEPARENT`] in the W3C Trace
//! Context format (`00-<trace id>-<span id>-<flags>`). The bridge puts the context of its
//! frame span there; the broker, the processor host and consumers open child spans of it
//! with [`child_span`], so one device reading can be followed from its frame through the
//! append and the processor to whoever reads it. With no endpoint configured nothing of this
//! runs: [`enabled`] is false and no header is written or read.
//!
//! [`MetricsRegistry`] is where the broker's and the bridge's Prometheus metrics are made and
//! rendered for their admin ports; which metrics exist is each program's own business.
//! [`latency::Percentiles`] is how the load test and the device simulator read and name
//! their latency histograms.
//!
//! Deliberately absent: the metrics themselves, a metrics server (each admin port serves its
//! own) and sampling (every traced reading is exported; the span count per batch is capped by
//! the callers).

pub mod latency;
mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_otlp::WithExportConfig;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use metrics::MetricsRegistry;

/// The record header that carries a W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// True once [`init`] installed an OTLP exporter: only then do callers write or read
/// [`TRACEPARENT`] headers.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard shuts the exporter down"]
pub struct Guard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs logging (`json` or text on stderr) and, with `otlp_endpoint` (e.g.
/// `http://127.0.0.1:4318`; `/v1/traces` is added), OpenTelemetry tracing for `service`.
pub fn init(service: &'static str, json: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Guard> {
    // RUST_LOG (e.g. `silt_broker=debug`) refines the default of `info`.
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            // openraft reports every vote at info and every heartbeat a dead peer misses at warn: only its errors by default.
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    // The filter applies to log lines only: spans go to OpenTelemetry whatever RUST_LOG says.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![if json { fmt.json().with_filter(filter()).boxed() } else { fmt.with_filter(filter()).boxed() }];
    let provider = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .build()
                .with_context(|| format!("setting up the OTLP exporter for {endpoint}"))?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
            Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    if let Some(p) = &provider {
        // Only Silt's own spans: dependencies (quinn opens spans per packet) would flood the
        // exporter and say nothing about a reading's path.
        let ours = tracing_subscriber::filter::filter_fn(|m| m.target().starts_with("silt"));
        layers.push(tracing_opentelemetry::layer().with_tracer(p.tracer(service)).with_filter(ours).boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("a tracing subscriber is already installed")?;
    ENABLED.store(provider.is_some(), Ordering::Relaxed);
    Ok(Guard { provider })
}

/// The `traceparent` of `span`, if it is recorded by OpenTelemetry.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// Parses a W3C `traceparent` (version 00).
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2
    {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let sc = SpanContext::new(trace, span, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the remote context in `traceparent` (a record header's value).
/// Returns false, leaving the span as it was, when the value does not parse.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &[u8]) -> bool {
    match parse_traceparent(traceparent) {
        Some(sc) => span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc)).is_ok(),
        None => false,
    }
}

/// The distinct `traceparent` values among `headers` of many records, at most `max` of them:
/// what a batch-level step (an append, a processor call) opens child spans for.
pub fn distinct_traceparents<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    max: usize,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (k, v) in headers {
        if out.len() >= max {
            break;
        }
        if k == TRACEPARENT.as_bytes() && !out.iter().any(|o| o == v) {
            out.push(v.to_vec());
        }
    }
    out
}

/// A span for a consumed record that carries a trace context (`None` for one that does not):
/// the last step of a reading's trace. Consumers open it around their handling of the record.
pub fn consume_span<'a>(
    topic: &str,
    partition: u32,
    offset: u64,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<tracing::Span> {
    let traceparents = distinct_traceparents(headers, 1);
    let tp = traceparents.first()?;
    let span = tracing::info_span!("silt.consume", topic = %topic, partition, offset);
    set_remote_parent(&span, tp).then_some(span)
}

/// A span named `name` for each traceparent, each a child of its remote context; kept open by
/// the caller for as long as the step lasts.
#[macro_export]
macro_rules! child_spans {
    ($traceparents:expr, $name:literal $(, $($field:tt)*)?) => {
        $traceparents
            .iter()
            .map(|tp| {
                let span = ::tracing::info_span!($name $(, $($field)*)?);
                $crate::set_remote_parent(&span, tp);
                span
            })
            .collect::<Vec<::tracing::Span>>()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_bad_ones_do_not() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(sc.is_sampled());
        for bad in [
            &b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
            b"00-0000-00f067aa0ba902b7-01",
            b"",
            b"\xff",
        ] {
            assert!(parse_traceparent(bad).is_none());
        }
        let zero = b"00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        assert!(parse_traceparent(zero).is_none());
        let headers = [(&b"traceparent"[..], &tp[..]), (b"other", b"x"), (b"traceparent", &tp[..])];
        assert_eq!(distinct_traceparents(headers, 8), vec![tp.to_vec()]);
    }
}
