//! `GET /metrics` in Prometheus' text format: HTTP requests by route, method and status (count
//! and latency histogram), transfers by result, the engine's and the log's counters, and the
//! projector's lag (recorded where they happen, through the `metrics` facade).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::server::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (one per process, however many servers).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0,
            ])
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only ours");
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("a thread for metrics upkeep");
        handle
    })
}

/// Counts and times every routed request. The handles of each (route, method, status) are
/// made once and kept: building the labels and looking them up in the registry allocates,
/// and this runs on every request.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let (requests, duration) = request_handles(route, method, response.status().as_u16());
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
    response
}

/// Handles by route, then by (method, status).
type RequestHandles = std::collections::HashMap<
    Box<str>,
    std::collections::HashMap<(axum::http::Method, u16), Handles>,
>;
type Handles = (metrics::Counter, metrics::Histogram);

/// The most (route, method, status) triples whose handles are kept; beyond it, handles are
/// made per request (the metrics are the same, only slower). Routes and methods are the
/// router's own, so the count is bounded anyway; this is the explicit limit.
const REQUEST_HANDLES_MAX: usize = 1024;

fn request_handles(route: Option<MatchedPath>, method: axum::http::Method, status: u16) -> Handles {
    use std::sync::RwLock;
    static HANDLES: OnceLock<RwLock<RequestHandles>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let route = route.as_ref().map_or("unmatched", |path| path.as_str());
    let key = (method, status);
    if let Some(found) = handles
        .read()
        .expect("metrics handles lock")
        .get(route)
        .and_then(|by_method| by_method.get(&key))
    {
        return found.clone();
    }
    let labels = [
        ("route", route.to_string()),
        ("method", key.0.to_string()),
        ("status", status.to_string()),
    ];
    let made = (
        metrics::counter!("kizo_http_requests_total", &labels),
        metrics::histogram!("kizo_http_request_duration_seconds", &labels),
    );
    // Only on a miss, so counting here costs nothing per request.
    let mut handles = handles.write().expect("metrics handles lock");
    let kept: usize = handles.values().map(std::collections::HashMap::len).sum();
    if kept < REQUEST_HANDLES_MAX {
        handles
            .entry(route.into())
            .or_default()
            .insert(key, made.clone());
    }
    made
}

/// Counts results by code, one increment per code.
pub fn results(name: &'static str, codes: impl IntoIterator<Item = &'static str>) {
    // A batch holds few distinct codes: a short list beats a map, and static labels are not
    // copied.
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for code in codes {
        match counts.iter_mut().find(|(seen, _)| *seen == code) {
            Some((_, count)) => *count += 1,
            None => counts.push((code, 1)),
        }
    }
    for (code, count) in counts {
        metrics::counter!(name, "result" => code).increment(count);
    }
}

/// `GET /v1/admin/metrics`: the same text as `/metrics`, for the operator console, which
/// reads it with the admin key on the public listener (same origin as the console).
#[utoipa::path(get, path = "/v1/admin/metrics", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 200, content_type = "text/plain", body = String, description = "Prometheus' text format (see docs/operations.md)"),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn admin_render(state: State<AppState>) -> Response {
    render(state).await
}

pub async fn render(State(state): State<AppState>) -> Response {
    for (partition, engine) in state.books.local_engines() {
        // On a cluster node, one series per partition served here.
        let labels: Vec<(&'static str, String)> = partition
            .map(|p| vec![("partition", p.to_string())])
            .unwrap_or_default();
        let stats = engine.stats();
        for (name, value) in [
            ("kizo_engine_rounds_total", stats.rounds),
            ("kizo_engine_events_total", stats.events),
            ("kizo_engine_commits_total", stats.commits),
            ("kizo_engine_records_total", stats.records),
            ("kizo_engine_commit_failures_total", stats.commit_failures),
            ("kizo_engine_shard_restarts_total", stats.shard_restarts),
            ("kizo_engine_store_fetches_total", stats.store_fetches),
            (
                "kizo_engine_store_fetched_ids_total",
                stats.store_fetched_ids,
            ),
            (
                "kizo_engine_store_fetch_found_total",
                stats.store_fetch_found,
            ),
        ] {
            metrics::counter!(name, &labels).absolute(value);
        }
        metrics::gauge!("kizo_engine_window_transfers", &labels).set(stats.window_transfers as f64);
        metrics::gauge!("kizo_engine_filter_bytes", &labels).set(stats.filter_bytes as f64);
        for (shard, depth) in engine.shard_mailbox_depths().into_iter().enumerate() {
            let mut labels = labels.clone();
            labels.push(("shard", shard.to_string()));
            metrics::gauge!("kizo_engine_shard_mailbox_depth", &labels).set(depth as f64);
        }
    }
    if let crate::books::Books::Cluster(cluster) = &state.books {
        for p in cluster.host.progress() {
            metrics::gauge!("kizo_partition_projector_lag_commits", "partition" => p.partition.to_string())
                .set(p.last_lsn.saturating_sub(p.projected_lsn) as f64);
        }
        metrics::gauge!("kizo_partitions_served").set(cluster.host.held().len() as f64);
    }
    crate::settlements::record_metrics(&state).await;
    if let crate::books::Books::One { wal, .. } = &state.books {
        metrics::counter!("kizo_wal_flushed_commits_total").absolute(wal.stats().flushed_commits);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}
