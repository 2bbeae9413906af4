//! The cluster's membership and partition leases in PostgreSQL (issue 28): nodes' heartbeats
//! and one lease row per partition. Every change to a lease is a compare-and-set on its epoch
//! in one statement, timed by the database's clock: what [`kizo_cluster::lease::plan`]
//! decides, this applies, and a node whose view was stale gets `false` and changes nothing.
//! Each partition's log stream is a [`LogStore`] too ([`LeaseStore::open_stream`]): an append
//! commits only under the partition's current epoch, which the new owner writes beside the log
//! (the partition's fence) before it reads it, so that a partition's log may live on another
//! database than the leases. The embedded store has no cluster: it serves
//! one node.

use kizo_cluster::lease::{LeaseAction, LeasePolicy, LeaseRow};
use kizo_cluster::{NodeId, PartitionCount};
use sqlx::postgres::PgPool;

use crate::store::{postgres_pool, read_error, LogStore, PartitionStream, StoreConfig, StoreError};

/// The database's time in milliseconds, in SQL.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    #[error("a cluster needs PostgreSQL: the embedded store serves one node")]
    NotPostgres,
    #[error("the data was created with {stored} partitions, not {asked}: the count is fixed")]
    PartitionCountChanged { stored: u32, asked: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of a fenced append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Committed: durable.
    Durable,
    /// Nothing written: the partition's epoch is no longer the one appended under.
    Fenced,
}

/// What one node sees of the cluster at one instant of the database's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub now_ms: u64,
    /// Nodes whose heartbeat is current and that are not leaving, by id.
    pub live: Vec<NodeId>,
    /// Every partition's lease, by partition.
    pub leases: Vec<LeaseRow>,
    /// Where each live node is reached (its `--advertise` address), by id.
    pub addresses: std::collections::BTreeMap<NodeId, String>,
}

impl ClusterView {
    /// Who serves `partition` by this view: its owner, if its lease has not lapsed.
    pub fn owner_of(&self, partition: u32) -> Option<&NodeId> {
        let lease = self.leases.get(partition as usize)?;
        debug_assert_eq!(
            lease.partition, partition,
            "leases are read in partition order"
        );
        lease
            .owner
            .as_ref()
            .filter(|_| lease.expires_ms > self.now_ms)
    }
}

/// Connections for the leases: a renewal never waits behind appends or transfers.
const LEASE_CONNECTIONS: u32 = 2;
/// Connections for every partition's log appends (each append is one group commit).
const LOG_CONNECTIONS: u32 = 8;
/// Connections for transfers between partitions (two durable statements each).
const CROSS_CONNECTIONS: u32 = 16;

#[derive(Clone, Debug)]
pub struct LeaseStore {
    /// The lease table and the nodes' heartbeats.
    pool: PgPool,
    /// The partitions' log streams, on this database.
    logs: PgPool,
    /// The log streams of partitions kept on other databases, by partition.
    elsewhere: std::collections::BTreeMap<u32, PgPool>,
    /// Transfers between partitions and transfer ids.
    cross: PgPool,
    partitions: PartitionCount,
}

fn ms(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl LeaseStore {
    /// Opens the lease table for a cluster of `partitions`; the first node to open it fixes
    /// the count, and every later one must ask for the same.
    pub async fn open(
        config: &StoreConfig,
        partitions: PartitionCount,
    ) -> Result<LeaseStore, LeaseStoreError> {
        let StoreConfig::Postgres { url, schema } = config else {
            return Err(LeaseStoreError::NotPostgres);
        };
        let pool = postgres_pool(url, schema.as_deref(), LEASE_CONNECTIONS).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Open(format!("migrations: {e}")))?;
        let asked = partitions.get();
        let (stored,): (i32,) = sqlx::query_as(
            "INSERT INTO cluster_config (partitions) VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET partitions = cluster_config.partitions
             RETURNING partitions",
        )
        .bind(signed(u64::from(asked)))
        .fetch_one(&pool)
        .await
        .map_err(read_error)?;
        if stored as u32 != asked {
            return Err(LeaseStoreError::PartitionCountChanged {
                stored: stored as u32,
                asked,
            });
        }
        sqlx::query(
            "INSERT INTO partition_leases (partition)
             SELECT generate_series(0, $1 - 1) ON CONFLICT DO NOTHING",
        )
        .bind(i32::try_from(asked).expect("at most 4096"))
        .execute(&pool)
        .await
        .map_err(read_error)?;
        Ok(LeaseStore {
            pool,
            logs: postgres_pool(url, schema.as_deref(), LOG_CONNECTIONS).await?,
            elsewhere: Default::default(),
            cross: postgres_pool(url, schema.as_deref(), CROSS_CONNECTIONS).await?,
            partitions,
        })
    }

    /// Keeps the logs of the partitions `databases` names on those databases (storage that
    /// grows with the cluster); the others stay on this one. Each database gets the schema.
    pub async fn with_partition_databases(
        mut self,
        databases: &std::collections::BTreeMap<u32, StoreConfig>,
    ) -> Result<LeaseStore, LeaseStoreError> {
        let mut pools: Vec<(StoreConfig, PgPool)> = Vec::new();
        for (&partition, config) in databases {
            let StoreConfig::Postgres { url, schema } = config else {
                return Err(LeaseStoreError::NotPostgres);
            };
            let pool = match pools.iter().find(|(known, _)| known == config) {
                Some((_, pool)) => pool.clone(),
                None => {
                    let pool = postgres_pool(url, schema.as_deref(), LOG_CONNECTIONS).await?;
                    sqlx::migrate!("./migrations/postgres")
                        .run(&pool)
                        .await
                        .map_err(|e| StoreError::Open(format!("migrations: {e}")))?;
                    pools.push((config.clone(), pool.clone()));
                    pool
                }
            };
            self.elsewhere.insert(partition, pool);
        }
        Ok(self)
    }

    pub fn partitions(&self) -> PartitionCount {
        self.partitions
    }

    /// `node` (reachable at `address`) starts: live from now, even if it left before.
    pub async fn join(&self, node: &NodeId, address: &str) -> Result<(), StoreError> {
        self.beat(node, address, "false").await
    }

    /// `node` is alive now. A node that is leaving stays leaving.
    pub async fn heartbeat(&self, node: &NodeId, address: &str) -> Result<(), StoreError> {
        self.beat(node, address, "cluster_nodes.leaving").await
    }

    async fn beat(&self, node: &NodeId, address: &str, leaving: &str) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO cluster_nodes (node_id, address, heartbeat_ms, leaving)
             VALUES ($1, $2, {NOW_MS}, false)
             ON CONFLICT (node_id) DO UPDATE
             SET address = EXCLUDED.address, heartbeat_ms = EXCLUDED.heartbeat_ms,
                 leaving = {leaving}"
        ))
        .bind(node.as_str())
        .bind(address)
        .execute(&self.pool)
        .await
        .map_err(read_error)?;
        Ok(())
    }

    /// A graceful shutdown: `node` is no longer live, so that every node's next plan hands
    /// its partitions to others (it releases them; they acquire them without waiting).
    pub async fn leave(&self, node: &NodeId) -> Result<(), StoreError> {
        sqlx::query("UPDATE cluster_nodes SET leaving = true WHERE node_id = $1")
            .bind(node.as_str())
            .execute(&self.pool)
            .await
            .map_err(read_error)?;
        Ok(())
    }

    /// The live nodes (a heartbeat within `node_timeout_ms`) and every lease, read after the
    /// database's clock: a lease renewed meanwhile looks live, never the other way round, so
    /// the view errs towards waiting.
    pub async fn view(&self, node_timeout_ms: u64) -> Result<ClusterView, StoreError> {
        let (now,): (i64,) = sqlx::query_as(&format!("SELECT {NOW_MS}"))
            .fetch_one(&self.pool)
            .await
            .map_err(read_error)?;
        let nodes: Vec<(String, String)> = sqlx::query_as(
            "SELECT node_id, address FROM cluster_nodes
             WHERE NOT leaving AND heartbeat_ms > $1 ORDER BY node_id",
        )
        .bind(now.saturating_sub(signed(node_timeout_ms)))
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        let rows: Vec<(i32, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT partition, owner, epoch, expires_ms FROM partition_leases ORDER BY partition",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("cluster: {what}"));
        let mut live = Vec::with_capacity(nodes.len());
        let mut addresses = std::collections::BTreeMap::new();
        for (id, address) in nodes {
            let id = NodeId::new(&id).map_err(|_| corrupt("a node id"))?;
            live.push(id.clone());
            addresses.insert(id, address);
        }
        let leases = rows
            .into_iter()
            .map(|(partition, owner, epoch, expires_ms)| {
                Ok(LeaseRow {
                    partition: u32::try_from(partition).map_err(|_| corrupt("a partition"))?,
                    owner: owner
                        .map(|o| NodeId::new(&o).map_err(|_| corrupt("an owner")))
                        .transpose()?,
                    epoch: ms(epoch),
                    expires_ms: ms(expires_ms),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(ClusterView {
            now_ms: ms(now),
            live,
            leases,
            addresses,
        })
    }

    /// Applies `action` of `me` if the lease is still as the plan saw it; the new epoch of
    /// an acquisition (or the renewed or released one), `None` when another node got there
    /// first. A `Stop` touches nothing.
    pub async fn apply(
        &self,
        me: &NodeId,
        action: &LeaseAction,
        policy: LeasePolicy,
    ) -> Result<Option<u64>, StoreError> {
        let length = signed(policy.length_ms);
        let (sql, partition, epoch, timed) = match *action {
            // Taken only if still free, lapsed or this node's own (a renewal between the
            // plan's read and this statement keeps the epoch but not the lease free).
            LeaseAction::Acquire { partition, epoch } => (
                format!(
                    "UPDATE partition_leases
                     SET owner = $3, epoch = epoch + 1, expires_ms = {NOW_MS} + $4
                     WHERE partition = $1 AND epoch = $2
                       AND (owner IS NULL OR owner = $3 OR expires_ms <= {NOW_MS})
                     RETURNING epoch"
                ),
                partition,
                epoch,
                true,
            ),
            LeaseAction::Renew { partition, epoch } => (
                format!(
                    "UPDATE partition_leases SET expires_ms = {NOW_MS} + $4
                     WHERE partition = $1 AND epoch = $2 AND owner = $3 AND expires_ms > {NOW_MS}
                     RETURNING epoch"
                ),
                partition,
                epoch,
                true,
            ),
            LeaseAction::Release { partition, epoch } => (
                format!(
                    "UPDATE partition_leases SET owner = NULL, expires_ms = {NOW_MS}
                     WHERE partition = $1 AND epoch = $2 AND owner = $3
                     RETURNING epoch"
                ),
                partition,
                epoch,
                false,
            ),
            LeaseAction::Stop { .. } => return Ok(None),
        };
        let mut query = sqlx::query_as(&sql)
            .bind(i32::try_from(partition).unwrap_or(i32::MAX))
            .bind(signed(epoch))
            .bind(me.as_str());
        if timed {
            query = query.bind(length);
        }
        let done: Option<(i64,)> = query.fetch_optional(&self.pool).await.map_err(read_error)?;
        Ok(done.map(|(epoch,)| ms(epoch)))
    }

    /// `partition`'s log stream, written under `epoch` (the one this node acquired): a
    /// [`LogStore`] for a `DurableWal`, whose appends are fenced ([`append_fenced`]). Before it
    /// answers, the partition's fence (beside its log) is raised to `epoch`: from then on no
    /// append of an earlier epoch commits, and the stream reads every one that did.
    /// `Superseded` when the lease is no longer at `epoch`, or the fence already past it.
    pub async fn open_stream(&self, partition: u32, epoch: u64) -> Result<LogStore, StoreError> {
        let leased: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM partition_leases WHERE partition = $1")
                .bind(i32::try_from(partition).unwrap_or(i32::MAX))
                .fetch_optional(&self.pool)
                .await
                .map_err(read_error)?;
        let superseded = || {
            StoreError::Superseded(format!(
                "partition {partition} is past epoch {epoch}: another node holds it"
            ))
        };
        if leased.map(|(e,)| ms(e)) != Some(epoch) {
            return Err(superseded());
        }
        let pool = self.elsewhere.get(&partition).unwrap_or(&self.logs).clone();
        let (fence,): (i64,) = sqlx::query_as(
            "INSERT INTO partition_fences (partition, epoch) VALUES ($1, $2)
             ON CONFLICT (partition) DO UPDATE SET epoch = GREATEST(partition_fences.epoch, EXCLUDED.epoch)
             RETURNING epoch",
        )
        .bind(i32::try_from(partition).unwrap_or(i32::MAX))
        .bind(signed(epoch))
        .fetch_one(&pool)
        .await
        .map_err(read_error)?;
        if ms(fence) != epoch {
            return Err(superseded());
        }
        Ok(LogStore::Partition(PartitionStream {
            pool,
            partition,
            epoch,
        }))
    }

    /// The cluster's cross-partition transfers, on a pool of their own.
    pub fn cross_transfers(&self) -> crate::cross::CrossStore {
        crate::cross::CrossStore::new(self.cross.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.logs.close().await;
        for pool in self.elsewhere.values() {
            pool.close().await;
        }
        self.cross.close().await;
    }
}

/// Appends a frame of a partition's log under its stream's epoch, in one statement that holds
/// the partition's fence row (`FOR SHARE`) while it inserts: a new owner raising the fence
/// waits for the append to commit, and an append that waited for it finds the new epoch and
/// writes nothing. So once a new owner has opened its stream, no append of an earlier epoch can
/// commit, and every one that did is in the log it reads.
pub(crate) async fn append_fenced(
    stream: &PartitionStream,
    first_lsn: u64,
    last_lsn: u64,
    frame: &[u8],
) -> Result<Appended, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO partition_frames (partition, first_lsn, last_lsn, epoch, frame)
         SELECT $1, $2, $3, $4, $5
         WHERE EXISTS (SELECT 1 FROM partition_fences
                       WHERE partition = $1 AND epoch = $4 FOR SHARE)",
    )
    .bind(i32::try_from(stream.partition).unwrap_or(i32::MAX))
    .bind(signed(first_lsn))
    .bind(signed(last_lsn))
    .bind(signed(stream.epoch))
    .bind(frame)
    .execute(&stream.pool)
    .await;
    match inserted {
        Ok(done) if done.rows_affected() == 1 => Ok(Appended::Durable),
        Ok(_) => Ok(Appended::Fenced),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            Err(StoreError::Conflict(first_lsn))
        }
        Err(sqlx::Error::Database(db)) => Err(StoreError::Unavailable(db.to_string())),
        // The statement may have reached the database: whether it committed is unknown.
        Err(error) => Err(StoreError::Unknown(error.to_string())),
    }
}
