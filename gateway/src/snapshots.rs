//! The admin API of snapshots: take one now, list them. The snapshot actor itself (periodic
//! snapshots, retention) and the start-up from the newest one live in `kizo-snapshots`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Serialize;

use crate::error::ApiError;
use crate::json::Json;
use crate::server::AppState;

pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/v1/admin/snapshots", post(take).get(list))
}

/// How long an on-demand snapshot may take (it waits for one under way first).
const TAKE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotView {
    /// The snapshot's folder name, `lsn-<LSN>`.
    pub name: String,
    /// The last commit it holds.
    pub lsn: u64,
    /// When it was written (RFC 3339).
    pub created_at: String,
    pub accounts: u64,
    /// The transfers it holds: pending ones and the shards' recent windows. Older ones live in
    /// the store, so this is not the history's length.
    pub transfers: u64,
    pub bytes: u64,
    pub shard_count: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TakenView {
    pub snapshot: SnapshotView,
    /// False when the newest snapshot already held every commit (nothing was written).
    pub written: bool,
    /// Commits applied on top of the previous snapshot.
    pub replayed: u64,
    pub duration_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotList {
    /// Oldest first; unreadable ones are left out (see `kizo-snapshot list`).
    pub snapshots: Vec<SnapshotView>,
}

fn view(name: String, manifest: &kizo_snapshots::Manifest) -> SnapshotView {
    SnapshotView {
        name,
        lsn: manifest.lsn,
        created_at: manifest.created_at.clone(),
        accounts: manifest.accounts,
        transfers: manifest.transfers,
        bytes: manifest.bytes,
        shard_count: manifest.shard_count,
    }
}

fn snapshots(state: &AppState) -> Result<&kizo_snapshots::Snapshots, ApiError> {
    state.snapshots.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "snapshots_disabled",
            "this server takes no snapshots (it was started without a snapshot folder)",
        )
    })
}

/// `POST /v1/admin/snapshots`: a snapshot of every commit so far, now.
#[utoipa::path(post, path = "/v1/admin/snapshots", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 201, description = "written", body = TakenView),
        (status = 200, description = "the newest snapshot already held every commit", body = TakenView),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "snapshots_disabled", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "snapshot_failed: the log or the folder could not be read or written", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn take(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<TakenView>), ApiError> {
    let snapshots = snapshots(&state)?;
    match snapshots.take_now(TAKE_TIMEOUT).await {
        Ok(taken) => {
            let status = if taken.written {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                Json(TakenView {
                    snapshot: view(taken.name, &taken.manifest),
                    written: taken.written,
                    replayed: taken.replayed,
                    duration_ms: taken.duration.as_millis() as u64,
                }),
            ))
        }
        Err(error) => {
            tracing::error!(%error, "on-demand snapshot failed");
            Err(ApiError::unavailable(error.to_string()).with_code("snapshot_failed"))
        }
    }
}

/// `GET /v1/admin/snapshots`: the snapshots kept.
#[utoipa::path(get, path = "/v1/admin/snapshots", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 200, body = SnapshotList),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "snapshots_disabled", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>) -> Result<Json<SnapshotList>, ApiError> {
    let dir = snapshots(&state)?.dir().clone();
    let listed = tokio::task::spawn_blocking(move || dir.list())
        .await
        .map_err(|error| ApiError::unavailable(error.to_string()))?
        .map_err(|error| ApiError::unavailable(error.to_string()))?;
    Ok(Json(SnapshotList {
        snapshots: listed
            .into_iter()
            .filter_map(|l| l.manifest.ok().map(|m| view(l.name, &m)))
            .collect(),
    }))
}
