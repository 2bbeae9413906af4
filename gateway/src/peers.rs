//! Between the nodes of a cluster: a node asks the owner of a partition to run one operation
//! on it (`POST /v1/cluster/partitions/{partition}`, with the ledger API's key), over one
//! pooled keep-alive client. The owner runs it on its own engine of that partition and never
//! forwards it again: it answers 421 `partition_not_served` when it does not serve the
//! partition (any more), and the asking node reads the lease table again.
//!
//! Also `GET /v1/admin/cluster`: nodes, partitions, owners, epochs, lag, the clearing
//! accounts and the transfers between partitions under way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use kizo_engine::{AccountFilter, CreateAccountResult, CreateTransferResult};
use serde::{Deserialize, Serialize};

use crate::books::{Books, PartitionAnswer, PartitionOp};
use crate::error::ApiError;
use crate::json::Json;
use crate::server::AppState;
use crate::wire::{AccountJson, TransferJson, U128, U64};

/// How long a connection to another node may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle connections kept per node.
const IDLE_PER_NODE: usize = 64;

/// The client that reaches other nodes.
#[derive(Clone)]
pub struct Peers {
    client: reqwest::Client,
    /// For streams that last (a user's events through another node): no total timeout.
    streaming: reqwest::Client,
    key: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the node does not serve the partition")]
    NotServed,
    #[error("the node could not be reached or could not answer: {0}")]
    Unreachable(String),
    /// Answered with a problem no retry changes (a key that differs between nodes, a node
    /// of another version).
    #[error("the node refused the call: {status} {detail}")]
    Refused { status: u16, detail: String },
}

impl Peers {
    /// A client that authenticates with `key` (every node has the same ledger API key) and
    /// gives up on a call after `timeout`: the lease length, past which a node that does not
    /// answer (paused, cut off) has lost its partitions anyway.
    pub fn new(key: &str, timeout: Duration) -> Peers {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(IDLE_PER_NODE)
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .build()
            .expect("a client without TLS settings builds");
        let streaming = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("a client without TLS settings builds");
        Peers {
            client,
            streaming,
            key: key.into(),
        }
    }

    /// A GET of `path` at the node reached at `address`, with the caller's `headers`, whose
    /// answer is passed on as it streams.
    pub async fn stream(
        &self,
        address: &str,
        path: &str,
        headers: reqwest::header::HeaderMap,
    ) -> Result<reqwest::Response, PeerError> {
        self.streaming
            .get(format!("http://{address}{path}"))
            .headers(headers)
            .send()
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))
    }

    /// Runs `op` on `partition` at the node reached at `address` (`host:port`).
    pub async fn send(
        &self,
        address: &str,
        partition: u32,
        op: &PartitionOp,
    ) -> Result<PartitionAnswer, PeerError> {
        let response = self
            .client
            .post(format!(
                "http://{address}/v1/cluster/partitions/{partition}"
            ))
            .bearer_auth(&self.key)
            .json(&OpJson::from(op))
            .send()
            .await
            .map_err(|e| PeerError::Unreachable(e.to_string()))?;
        let status = response.status();
        if status == StatusCode::MISDIRECTED_REQUEST {
            return Err(PeerError::NotServed);
        }
        if status.is_server_error() {
            return Err(PeerError::Unreachable(format!("answered {status}")));
        }
        if !status.is_success() {
            let detail = response.text().await.unwrap_or_default();
            return Err(PeerError::Refused {
                status: status.as_u16(),
                detail,
            });
        }
        let answer: AnswerJson = response
            .json()
            .await
            .map_err(|e| PeerError::Unreachable(format!("an answer that does not read: {e}")))?;
        PartitionAnswer::try_from(answer).map_err(|detail| PeerError::Refused {
            status: status.as_u16(),
            detail,
        })
    }
}

/// A [`PartitionOp`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpJson {
    CreateAccounts {
        accounts: Vec<AccountJson>,
    },
    CreateTransfers {
        transfers: Vec<TransferJson>,
    },
    LookupAccounts {
        ids: Vec<U128>,
    },
    LookupTransfers {
        ids: Vec<U128>,
    },
    AccountTransfers {
        account_id: U128,
        timestamp_min: U64,
        timestamp_max: U64,
        limit: u32,
        debits: bool,
        credits: bool,
        reversed: bool,
    },
}

/// A [`PartitionAnswer`] on the wire; results as their numeric values.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum AnswerJson {
    Accounts {
        results: Vec<u32>,
    },
    Transfers {
        results: Vec<u32>,
        first_timestamp: U64,
    },
    FoundAccounts {
        accounts: Vec<AccountJson>,
    },
    FoundTransfers {
        transfers: Vec<TransferJson>,
    },
}

impl From<&PartitionOp> for OpJson {
    fn from(op: &PartitionOp) -> Self {
        match op {
            PartitionOp::CreateAccounts(accounts) => OpJson::CreateAccounts {
                accounts: accounts.iter().map(|&a| a.into()).collect(),
            },
            PartitionOp::CreateTransfers(transfers) => OpJson::CreateTransfers {
                transfers: transfers.iter().map(|&t| t.into()).collect(),
            },
            PartitionOp::LookupAccounts(ids) => OpJson::LookupAccounts {
                ids: ids.iter().map(|&id| U128(id)).collect(),
            },
            PartitionOp::LookupTransfers(ids) => OpJson::LookupTransfers {
                ids: ids.iter().map(|&id| U128(id)).collect(),
            },
            PartitionOp::AccountTransfers(f) => OpJson::AccountTransfers {
                account_id: U128(f.account_id),
                timestamp_min: U64(f.timestamp_min),
                timestamp_max: U64(f.timestamp_max),
                limit: f.limit,
                debits: f.debits,
                credits: f.credits,
                reversed: f.reversed,
            },
        }
    }
}

impl From<OpJson> for PartitionOp {
    fn from(op: OpJson) -> Self {
        match op {
            OpJson::CreateAccounts { accounts } => {
                PartitionOp::CreateAccounts(accounts.into_iter().map(Into::into).collect())
            }
            OpJson::CreateTransfers { transfers } => {
                PartitionOp::CreateTransfers(transfers.into_iter().map(Into::into).collect())
            }
            OpJson::LookupAccounts { ids } => {
                PartitionOp::LookupAccounts(ids.into_iter().map(|id| id.0).collect())
            }
            OpJson::LookupTransfers { ids } => {
                PartitionOp::LookupTransfers(ids.into_iter().map(|id| id.0).collect())
            }
            OpJson::AccountTransfers {
                account_id,
                timestamp_min,
                timestamp_max,
                limit,
                debits,
                credits,
                reversed,
            } => PartitionOp::AccountTransfers(AccountFilter {
                account_id: account_id.0,
                timestamp_min: timestamp_min.0,
                timestamp_max: timestamp_max.0,
                limit,
                debits,
                credits,
                reversed,
            }),
        }
    }
}

impl From<PartitionAnswer> for AnswerJson {
    fn from(answer: PartitionAnswer) -> Self {
        match answer {
            PartitionAnswer::Accounts(results) => AnswerJson::Accounts {
                results: results.into_iter().map(|r| r as u32).collect(),
            },
            PartitionAnswer::Transfers(results, first) => AnswerJson::Transfers {
                results: results.into_iter().map(|r| r as u32).collect(),
                first_timestamp: U64(first),
            },
            PartitionAnswer::FoundAccounts(accounts) => AnswerJson::FoundAccounts {
                accounts: accounts.into_iter().map(Into::into).collect(),
            },
            PartitionAnswer::FoundTransfers(transfers) => AnswerJson::FoundTransfers {
                transfers: transfers.into_iter().map(Into::into).collect(),
            },
        }
    }
}

impl TryFrom<AnswerJson> for PartitionAnswer {
    type Error = String;

    fn try_from(answer: AnswerJson) -> Result<Self, String> {
        let unknown = |value: u32| format!("an unknown result {value}");
        Ok(match answer {
            AnswerJson::Accounts { results } => PartitionAnswer::Accounts(
                results
                    .into_iter()
                    .map(|v| CreateAccountResult::from_u32(v).ok_or_else(|| unknown(v)))
                    .collect::<Result<_, _>>()?,
            ),
            AnswerJson::Transfers {
                results,
                first_timestamp,
            } => PartitionAnswer::Transfers(
                results
                    .into_iter()
                    .map(|v| CreateTransferResult::from_u32(v).ok_or_else(|| unknown(v)))
                    .collect::<Result<_, _>>()?,
                first_timestamp.0,
            ),
            AnswerJson::FoundAccounts { accounts } => {
                PartitionAnswer::FoundAccounts(accounts.into_iter().map(Into::into).collect())
            }
            AnswerJson::FoundTransfers { transfers } => {
                PartitionAnswer::FoundTransfers(transfers.into_iter().map(Into::into).collect())
            }
        })
    }
}

/// The route other nodes call (behind the ledger API's key).
pub fn node_routes() -> Router<AppState> {
    Router::new().route("/v1/cluster/partitions/{partition}", post(serve_partition))
}

/// The admin route.
pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/v1/admin/cluster", get(cluster))
}

/// Runs another node's operation on this node's engine of `partition`.
async fn serve_partition(
    State(state): State<AppState>,
    Path(partition): Path<String>,
    Json(op): Json<OpJson>,
) -> Result<Json<AnswerJson>, ApiError> {
    let Books::Cluster(cluster) = &state.books else {
        return Err(ApiError::not_found("this node is not in a cluster"));
    };
    let partition: u32 = partition
        .parse()
        .map_err(|_| ApiError::invalid("partition", "a partition is a number"))?;
    let not_served = || {
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "partition_not_served",
            format!("this node does not serve partition {partition}"),
        )
    };
    let engine = cluster.host.engine(partition).ok_or_else(not_served)?;
    match PartitionOp::from(op).run(&engine).await {
        Ok(answer) => Ok(Json(answer.into())),
        // Dropped while the call ran: the caller looks again.
        Err(kizo_engine::EngineError::ShutDown) => Err(not_served()),
        Err(error) => Err(error.into()),
    }
}

/// The cluster as this node sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClusterReport {
    /// This node.
    node_id: String,
    partitions: u32,
    /// The database's clock when the view was read (ms since the epoch).
    now_ms: u64,
    /// Live nodes and where they are reached.
    nodes: Vec<NodeReport>,
    leases: Vec<LeaseReport>,
    /// The partitions this node serves, with how far their read models are written.
    served_here: Vec<ServedReport>,
    /// Clearing accounts per ledger, summed over partitions: `net` is zero when no transfer
    /// between partitions is under way, `pending` the holds of those that are. Absent while
    /// a partition is not served (`clearing_unreadable` says why).
    clearing: Option<Vec<ClearingReport>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clearing_unreadable: Option<String>,
    /// Transfers between partitions not yet final, and the age of the oldest.
    cross_unfinished: u64,
    cross_oldest_age_ms: Option<u64>,
    /// The unfinished ones older than this are reported as late (`cross_late`).
    cross_late_after_ms: u64,
    cross_late: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct NodeReport {
    node_id: String,
    address: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LeaseReport {
    partition: u32,
    /// Absent when free or lapsed.
    owner: Option<String>,
    epoch: u64,
    expires_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ServedReport {
    partition: u32,
    epoch: u64,
    last_lsn: u64,
    projected_lsn: u64,
    /// Commits of the partition's log not yet in the read models.
    lag: u64,
    /// The snapshot this node started the partition from (0: its whole log).
    snapshot_lsn: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ClearingReport {
    ledger: u32,
    #[schema(value_type = String)]
    net: String,
    #[schema(value_type = String)]
    pending: String,
}

/// A transfer between partitions unfinished for longer than this is late.
pub const CROSS_LATE_AFTER: Duration = Duration::from_secs(60);

/// `GET /v1/admin/cluster`: nodes, leases (owners, epochs), the partitions served here with
/// their lag, the clearing accounts' totals and the transfers between partitions under way.
#[utoipa::path(get, path = "/v1/admin/cluster", tag = "admin", security(("admin_api_key" = [])),
    responses(
        (status = 200, body = ClusterReport),
        (status = 401, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "Not a cluster node", body = crate::error::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = crate::error::ProblemDoc, content_type = "application/problem+json"),
    ))]
pub async fn cluster(State(state): State<AppState>) -> Result<Json<ClusterReport>, ApiError> {
    let Books::Cluster(cluster) = &state.books else {
        return Err(ApiError::not_found(
            "this server is one node (started without --node-id)",
        ));
    };
    let view = cluster
        .host
        .refresh_view(cluster.node_timeout)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let served_here = cluster
        .host
        .progress()
        .into_iter()
        .map(|p| ServedReport {
            partition: p.partition,
            epoch: p.epoch,
            last_lsn: p.last_lsn,
            projected_lsn: p.projected_lsn,
            lag: p.last_lsn.saturating_sub(p.projected_lsn),
            snapshot_lsn: p.snapshot_lsn,
        })
        .collect();
    let cross = cluster.cross.store();
    let late_after_ms = CROSS_LATE_AFTER.as_millis() as u64;
    let summary = cross
        .unfinished_summary(view.now_ms.saturating_sub(late_after_ms))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let mut ledgers = cross
        .ledgers()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    ledgers.insert(state.currency.ledger);
    let clearing_ids: Vec<u128> = ledgers
        .iter()
        .flat_map(|&ledger| {
            cluster
                .host
                .partitions()
                .all()
                .map(move |p| kizo_cluster::legs::clearing_account_id(ledger, p))
        })
        .collect();
    let mut accounts = Vec::with_capacity(clearing_ids.len());
    let mut clearing_unreadable = None;
    for ids in clearing_ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
        match state.books.lookup_accounts(ids.to_vec()).await {
            Ok(found) => accounts.extend(found),
            Err(error) => {
                clearing_unreadable = Some(error.to_string());
                break;
            }
        }
    }
    let totals: BTreeMap<u32, (i128, u128)> = kizo_cluster::legs::clearing_totals(&accounts);
    Ok(Json(ClusterReport {
        node_id: cluster.host.node_id().as_str().to_owned(),
        partitions: cluster.host.partitions().get(),
        now_ms: view.now_ms,
        nodes: view
            .addresses
            .iter()
            .map(|(node, address)| NodeReport {
                node_id: node.as_str().to_owned(),
                address: address.clone(),
            })
            .collect(),
        leases: view
            .leases
            .iter()
            .map(|lease| LeaseReport {
                partition: lease.partition,
                owner: view
                    .owner_of(lease.partition)
                    .map(|o| o.as_str().to_owned()),
                epoch: lease.epoch,
                expires_ms: lease.expires_ms,
            })
            .collect(),
        served_here,
        clearing: clearing_unreadable.is_none().then(|| {
            ledgers
                .iter()
                .map(|&ledger| {
                    let (net, pending) = totals.get(&ledger).copied().unwrap_or_default();
                    ClearingReport {
                        ledger,
                        net: net.to_string(),
                        pending: pending.to_string(),
                    }
                })
                .collect()
        }),
        clearing_unreadable,
        cross_unfinished: summary.unfinished,
        cross_oldest_age_ms: summary
            .oldest_created_ms
            .map(|created| view.now_ms.saturating_sub(created)),
        cross_late_after_ms: late_after_ms,
        cross_late: summary.late,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizo_engine::{Account, Transfer};

    fn round_trip(op: PartitionOp) {
        let text = serde_json::to_string(&OpJson::from(&op)).unwrap();
        let back: OpJson = serde_json::from_str(&text).unwrap();
        assert_eq!(PartitionOp::from(back), op, "{text}");
    }

    #[test]
    fn operations_and_answers_cross_the_wire_unchanged() {
        let account = Account {
            credits_posted: u128::MAX - 1,
            timestamp: 7,
            ..Account::new(u128::MAX - 2, 840, 3)
        };
        let transfer = Transfer {
            timestamp: 9,
            user_data_64: u64::MAX,
            ..Transfer::new(5, 6, 7, u128::MAX, 840, 1)
        };
        round_trip(PartitionOp::CreateAccounts(vec![account]));
        round_trip(PartitionOp::CreateTransfers(vec![transfer, transfer]));
        round_trip(PartitionOp::LookupAccounts(vec![1, u128::MAX]));
        round_trip(PartitionOp::LookupTransfers(vec![]));
        round_trip(PartitionOp::AccountTransfers(AccountFilter {
            reversed: true,
            timestamp_max: u64::MAX,
            ..AccountFilter::all(3, 10)
        }));
        for answer in [
            PartitionAnswer::Accounts(CreateAccountResult::ALL.to_vec()),
            PartitionAnswer::Transfers(CreateTransferResult::ALL.to_vec(), u64::MAX),
            PartitionAnswer::FoundAccounts(vec![account]),
            PartitionAnswer::FoundTransfers(vec![transfer]),
        ] {
            let text = serde_json::to_string(&AnswerJson::from(answer.clone())).unwrap();
            let back: AnswerJson = serde_json::from_str(&text).unwrap();
            assert_eq!(PartitionAnswer::try_from(back).unwrap(), answer);
        }
        let unknown: AnswerJson =
            serde_json::from_str(r#"{"answer":"accounts","results":[4000000]}"#).unwrap();
        assert!(PartitionAnswer::try_from(unknown).is_err());
    }
}
