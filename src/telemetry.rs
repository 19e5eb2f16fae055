//! Metrics (Prometheus text format, served only on `--metrics-listen`) and request ids.
//!
//! What is counted, and where:
//! - `cdn_urls_total{provider, outcome}`: URL outcomes the worker recorded (succeeded,
//!   submitted, retrying, failed);
//! - `cdn_purge_requests_total{provider}` and `cdn_provider_request_duration_seconds{provider}`:
//!   requests sent to providers and how long each took;
//! - `cdn_purge_retries_total{provider}`: URLs sent again after a failed attempt;
//! - `cdn_invalidation_duration_seconds{provider}`: Continue to finished;
//! - `cdn_urls_queued`, `cdn_urls_in_flight`: the queue, read from the database at each scrape;
//! - `http_request_duration_seconds{method, route, status}`: by route pattern, never raw path.

use crate::store::Store;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing::Instrument;

/// Histogram buckets in seconds: from a loopback purge to a CloudFront wave.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// The process's recorder, installed on first use (several apps in one test process share it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test's) may already be installed; this one still renders its own.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `GET /metrics` on the metrics listener: the queue depth is read now, then everything is
/// rendered in the Prometheus text format.
pub async fn render(store: web::Data<Store>) -> HttpResponse {
    match store.queue_depth().await {
        Ok((queued, in_flight)) => {
            metrics::gauge!("cdn_urls_queued").set(queued as f64);
            metrics::gauge!("cdn_urls_in_flight").set(in_flight as f64);
        }
        Err(e) => tracing::warn!(error = ?e, "queue depth unknown for /metrics"),
    }
    let handle = handle();
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// A request id for every request: the caller's `X-Request-Id` when it is a sane token, a new
/// random one otherwise. Every log line of the request carries it (a span), the response
/// returns it, and the request's latency is observed by route pattern.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| format!("{:016x}", OsRng.next_u64()));
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method);
    let started = std::time::Instant::now();
    let mut response = next.call(req).instrument(span).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    metrics::histogram!(
        "http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(response)
}

/// The id [`request_id`] gave the request.
#[derive(Clone)]
pub struct RequestId(pub String);
