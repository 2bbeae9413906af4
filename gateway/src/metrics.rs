//! `GET /metrics` in Prometheus' text format: HTTP requests by route, method and status (count
//! and latency histogram), transfers by result, the engine's and the log's counters, and the
//! projector's lag (recorded where they happen, through the `metrics` facade).

use std::collections::BTreeMap;
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

/// Counts and times every routed request.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("kizo_http_requests_total", &labels).increment(1);
    metrics::histogram!("kizo_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts results by code, one increment per code.
pub fn results<'a>(name: &'static str, codes: impl IntoIterator<Item = &'a str>) {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for code in codes {
        *counts.entry(code).or_default() += 1;
    }
    for (code, count) in counts {
        metrics::counter!(name, "result" => code.to_string()).increment(count);
    }
}

pub async fn render(State(state): State<AppState>) -> Response {
    let stats = state.engine.stats();
    for (name, value) in [
        ("kizo_engine_rounds_total", stats.rounds),
        ("kizo_engine_events_total", stats.events),
        ("kizo_engine_commits_total", stats.commits),
        ("kizo_engine_records_total", stats.records),
        ("kizo_engine_commit_failures_total", stats.commit_failures),
        ("kizo_engine_shard_restarts_total", stats.shard_restarts),
    ] {
        metrics::counter!(name).absolute(value);
    }
    for (shard, depth) in state.engine.shard_mailbox_depths().into_iter().enumerate() {
        metrics::gauge!("kizo_engine_shard_mailbox_depth", "shard" => shard.to_string())
            .set(depth as f64);
    }
    crate::settlements::record_metrics(&state).await;
    let wal = state.wal.stats();
    metrics::counter!("kizo_wal_flushed_commits_total").absolute(wal.flushed_commits);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response()
}
