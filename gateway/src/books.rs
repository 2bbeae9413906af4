//! The books: where ledger operations run. On one node, its one engine. In a cluster, the
//! engine of each account's partition, on this node or on the node that owns the partition
//! (reached through [`crate::peers`]); a transfer between two partitions goes through
//! clearing accounts ([`CrossPartition`]). Handlers call the books and never ask where an
//! account lives.
//!
//! What a batch means in a cluster:
//! - Events that are not linked are independent, as on one node; each goes to its partition.
//! - A linked chain is atomic inside one partition only: a chain whose events fall in several
//!   partitions is refused whole (`linked_across_partitions`), before anything is applied.
//! - A transfer between partitions is driven leg by leg to its end, and answered with the
//!   ledger's code: `created` once posted, or the code of the leg that refused it. Only
//!   single-phase transfers without flags cross; a two-phase or balancing one whose accounts
//!   are in two partitions is answered `credit_account_not_found` by the debit's partition.
//! - A batch that could not reach one of its partitions is answered 503: events of the other
//!   partitions were applied, and a retry with the same ids answers them `exists`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kizo_cluster::legs::{clearing_account_of, CrossOutcome, CrossTransfer, Phase};
use kizo_cluster::{partition_of, PartitionCount};
use kizo_engine::{
    Account, AccountFilter, AccountFlags, CreateAccountResult, CreateTransferResult, Engine,
    EngineError, StatsSnapshot, Transfer, TransferFlags,
};
use kizo_persistence::{DurableWal, StoreError};

use crate::cluster::{Begun, CrossPartition, LegError, LegFuture, LegRouter, PartitionHost};
use crate::peers::{PeerError, Peers};

/// How long an operation waits for its partition to be served (an owner changing, a node
/// restarting) before it is answered 503, retryable.
pub const ROUTE_PATIENCE: Duration = Duration::from_secs(3);
/// Partitions asked at once by a lookup that asks them all.
const FAN_OUT_MAX: usize = 32;

/// One node's engine, or a cluster's partitions.
pub enum Books {
    One {
        engine: Engine,
        wal: Arc<DurableWal>,
    },
    Cluster(Arc<ClusterBooks>),
}

/// A cluster node's view of the books.
pub struct ClusterBooks {
    pub host: PartitionHost,
    pub cross: CrossPartition,
    pub peers: Peers,
    /// A node whose heartbeat is older than this is not live (as the lease loop counts).
    pub node_timeout: Duration,
    /// How long a wallet payment between partitions is waited for before it is answered
    /// 202 (it goes on, and its status is at `/v1/transfers/{id}`).
    pub pay_bound: Duration,
    /// The cluster's own accounts (clearing accounts, and the bank's of each partition) known
    /// to exist: accounts are never removed, so each is created once per node rather than
    /// before every leg or settlement.
    pub own_accounts_made: std::sync::Mutex<std::collections::BTreeSet<u128>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BooksError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("partition {partition} is not served right now (its owner is changing or out of reach); retry")]
    Unavailable { partition: u32 },
    #[error(
        "a linked chain spans partitions {0} and {1}: a chain is atomic within one partition only"
    )]
    LinkedAcrossPartitions(u32, u32),
    #[error("the cluster's store: {0}")]
    Store(#[from] StoreError),
    /// The cluster's clearing accounts are its own: no request of the ledger API creates one
    /// or moves money in or out of one (their net is what reconciliation checks).
    #[error("account {0} is in the range of the cluster's clearing accounts, which only transfers between partitions use")]
    ClearingAccountReserved(u128),
    /// Another node refused a call no retry changes: nodes configured differently.
    #[error("the owner of partition {partition} refused the call ({status}): {detail}")]
    PeerRefused {
        partition: u32,
        status: u16,
        detail: String,
    },
}

/// One operation on one partition's engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionOp {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    LookupAccounts(Vec<u128>),
    LookupTransfers(Vec<u128>),
    AccountTransfers(AccountFilter),
}

/// A partition's answer to a [`PartitionOp`], variant for variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionAnswer {
    Accounts(Vec<CreateAccountResult>),
    /// The results, and the timestamp of the first event (see
    /// [`Engine::create_transfers_stamped`]).
    Transfers(Vec<CreateTransferResult>, u64),
    FoundAccounts(Vec<Account>),
    FoundTransfers(Vec<Transfer>),
}

impl PartitionOp {
    /// Runs on the engine that serves the partition.
    pub async fn run(self, engine: &Engine) -> Result<PartitionAnswer, EngineError> {
        Ok(match self {
            PartitionOp::CreateAccounts(accounts) => {
                PartitionAnswer::Accounts(engine.create_accounts(accounts).await?)
            }
            PartitionOp::CreateTransfers(transfers) => {
                let (results, first) = engine.create_transfers_stamped(transfers).await?;
                PartitionAnswer::Transfers(results, first)
            }
            PartitionOp::LookupAccounts(ids) => {
                PartitionAnswer::FoundAccounts(engine.lookup_accounts(ids).await?)
            }
            PartitionOp::LookupTransfers(ids) => {
                PartitionAnswer::FoundTransfers(engine.lookup_transfers(ids).await?)
            }
            PartitionOp::AccountTransfers(filter) => {
                PartitionAnswer::FoundTransfers(engine.get_account_transfers(filter).await?)
            }
        })
    }
}

/// A wallet payment's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paid {
    /// The ledger's answer; `timestamp` is the transfer's when the answer carries it (0 for
    /// one between partitions, whose legs have their own).
    Decided {
        result: CreateTransferResult,
        timestamp: u64,
    },
    /// A payment between partitions not finished within the bound: it goes on.
    Underway,
}

impl Books {
    /// The partitions' count: 1 on one node.
    pub fn partitions(&self) -> PartitionCount {
        match self {
            Books::One { .. } => PartitionCount::ONE,
            Books::Cluster(cluster) => cluster.host.partitions(),
        }
    }

    /// The partition an account lives in (a clearing account names its own).
    pub fn home_of(&self, account: u128) -> u32 {
        home_of(account, self.partitions())
    }

    pub async fn create_accounts(
        &self,
        accounts: Vec<Account>,
    ) -> Result<Vec<CreateAccountResult>, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => return Ok(engine.create_accounts(accounts).await?),
            Books::Cluster(cluster) => cluster,
        };
        kizo_engine::check_batch(accounts.len())?;
        if let Some(clearing) = accounts
            .iter()
            .find(|a| clearing_account_of(a.id).is_some())
        {
            return Err(BooksError::ClearingAccountReserved(clearing.id));
        }
        let partitions = self.partitions();
        let homes: Vec<u32> = accounts.iter().map(|a| home_of(a.id, partitions)).collect();
        let linked: Vec<bool> = accounts
            .iter()
            .map(|a| a.flags.contains(AccountFlags::LINKED))
            .collect();
        check_chains(&linked, &homes, &homes)?;
        let groups = group(accounts, &homes);
        let mut results = vec![CreateAccountResult::Created; homes.len()];
        let answers = futures_util::future::join_all(groups.into_iter().map(
            |(partition, (indexes, accounts))| async move {
                let answer = cluster
                    .on_partition(partition, PartitionOp::CreateAccounts(accounts))
                    .await;
                (indexes, answer)
            },
        ))
        .await;
        for (indexes, answer) in answers {
            let PartitionAnswer::Accounts(answered) = answer? else {
                unreachable!("accounts answered otherwise")
            };
            assert_eq!(answered.len(), indexes.len(), "one result per account");
            for (index, result) in indexes.into_iter().zip(answered) {
                results[index] = result;
            }
        }
        Ok(results)
    }

    pub async fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<CreateTransferResult>, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => return Ok(engine.create_transfers(transfers).await?),
            Books::Cluster(cluster) => cluster,
        };
        kizo_engine::check_batch(transfers.len())?;
        if let Some(clearing) = transfers
            .iter()
            .flat_map(|t| [t.debit_account_id, t.credit_account_id])
            .find(|&id| clearing_account_of(id).is_some())
        {
            return Err(BooksError::ClearingAccountReserved(clearing));
        }
        let partitions = self.partitions();
        let debits = cluster.debit_homes(&transfers).await?;
        let credits: Vec<u32> = transfers
            .iter()
            .zip(&debits)
            .map(|(t, &debit)| match t.credit_account_id {
                0 => debit,
                credit => home_of(credit, partitions),
            })
            .collect();
        let linked: Vec<bool> = transfers
            .iter()
            .map(|t| t.flags.contains(TransferFlags::LINKED))
            .collect();
        check_chains(&linked, &debits, &credits)?;
        let mut results = vec![CreateTransferResult::Created; transfers.len()];
        let refused = cluster.claim_ids(&transfers, &debits, &linked).await?;
        let mut crossing = Vec::new();
        let mut local = Vec::new();
        let mut local_homes = Vec::new();
        for (index, transfer) in transfers.into_iter().enumerate() {
            if let Some(&result) = refused.get(&index) {
                results[index] = result;
                continue;
            }
            let crosses =
                debits[index] != credits[index] && CrossTransfer::new(transfer, partitions).is_ok();
            if crosses {
                crossing.push((index, transfer));
            } else {
                local.push((index, transfer));
                local_homes.push(debits[index]);
            }
        }
        let (indexes, local): (Vec<usize>, Vec<Transfer>) = local.into_iter().unzip();
        let groups = group(local, &local_homes);
        let answers = futures_util::future::join_all(groups.into_iter().map(
            |(partition, (group_indexes, transfers))| async move {
                let answer = cluster
                    .on_partition(partition, PartitionOp::CreateTransfers(transfers))
                    .await;
                (group_indexes, answer)
            },
        ))
        .await;
        for (group_indexes, answer) in answers {
            let PartitionAnswer::Transfers(answered, _) = answer? else {
                unreachable!("transfers answered otherwise")
            };
            assert_eq!(
                answered.len(),
                group_indexes.len(),
                "one result per transfer"
            );
            for (position, result) in group_indexes.into_iter().zip(answered) {
                results[indexes[position]] = result;
            }
        }
        let crossed: Vec<(usize, Result<CreateTransferResult, BooksError>)> =
            futures_util::stream::iter(crossing)
                .map(|(index, transfer)| async move {
                    (index, cluster.cross_to_end(transfer).await)
                })
                .buffer_unordered(FAN_OUT_MAX)
                .collect()
                .await;
        for (index, result) in crossed {
            results[index] = result?;
        }
        Ok(results)
    }

    /// A wallet payment: one transfer, with its timestamp when it is decided at once; one
    /// between partitions is waited for up to the cluster's bound.
    pub async fn pay(&self, transfer: Transfer) -> Result<Paid, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => {
                let (results, timestamp) = engine.create_transfers_stamped(vec![transfer]).await?;
                return Ok(Paid::Decided {
                    result: results[0],
                    timestamp,
                });
            }
            Books::Cluster(cluster) => cluster,
        };
        let partitions = self.partitions();
        let debit = home_of(transfer.debit_account_id, partitions);
        if debit == home_of(transfer.credit_account_id, partitions) {
            let PartitionAnswer::Transfers(results, timestamp) = cluster
                .on_partition(debit, PartitionOp::CreateTransfers(vec![transfer]))
                .await?
            else {
                unreachable!("transfers answered otherwise")
            };
            return Ok(Paid::Decided {
                result: results[0],
                timestamp,
            });
        }
        // Stored before anything is answered: a 202 promises a transfer that exists, which
        // the sweep finishes if its driver cannot.
        let (cross, retry) = match cluster
            .cross
            .begin(transfer)
            .await
            .map_err(|error| cluster.cross_error(error))?
        {
            Begun::Refused(result) => {
                return Ok(Paid::Decided {
                    result,
                    timestamp: 0,
                })
            }
            Begun::Started { cross, retry } => (cross, retry),
        };
        let driving = tokio::spawn({
            let cluster = cluster.clone();
            async move { cluster.finish_cross(cross, retry).await }
        });
        match tokio::time::timeout(cluster.pay_bound, driving).await {
            Ok(Ok(result)) => Ok(Paid::Decided {
                result: result?,
                timestamp: 0,
            }),
            // The task panicked: an assertion on the protocol failed. The transfer is stored
            // and resumed by the sweep; the caller hears it is under way.
            Ok(Err(panicked)) => {
                tracing::error!(error = %panicked, "a cross-partition payment's driver failed");
                Ok(Paid::Underway)
            }
            Err(_) => Ok(Paid::Underway),
        }
    }

    pub async fn lookup_accounts(&self, ids: Vec<u128>) -> Result<Vec<Account>, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => return Ok(engine.lookup_accounts(ids).await?),
            Books::Cluster(cluster) => cluster,
        };
        kizo_engine::check_batch(ids.len())?;
        let partitions = self.partitions();
        let homes: Vec<u32> = ids.iter().map(|&id| home_of(id, partitions)).collect();
        let mut found = BTreeMap::new();
        for answer in futures_util::future::join_all(group(ids.clone(), &homes).into_iter().map(
            |(partition, (_, ids))| {
                cluster.on_partition(partition, PartitionOp::LookupAccounts(ids))
            },
        ))
        .await
        {
            let PartitionAnswer::FoundAccounts(accounts) = answer? else {
                unreachable!("lookups answered otherwise")
            };
            found.extend(accounts.into_iter().map(|a| (a.id, a)));
        }
        Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
    }

    /// Transfers by id. In a cluster a transfer's id does not say its partition: every
    /// partition is asked (see [`Books::lookup_transfers_of`] when the account is known).
    pub async fn lookup_transfers(&self, ids: Vec<u128>) -> Result<Vec<Transfer>, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => return Ok(engine.lookup_transfers(ids).await?),
            Books::Cluster(cluster) => cluster,
        };
        kizo_engine::check_batch(ids.len())?;
        cluster.lookup_everywhere(ids).await
    }

    /// Transfers by id among those of `account` (the partition that holds its debits and
    /// the credits of its own partition and of clearing).
    pub async fn lookup_transfers_of(
        &self,
        account: u128,
        ids: Vec<u128>,
    ) -> Result<Vec<Transfer>, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => return Ok(engine.lookup_transfers(ids).await?),
            Books::Cluster(cluster) => cluster,
        };
        let partition = self.home_of(account);
        match cluster
            .on_partition(partition, PartitionOp::LookupTransfers(ids))
            .await?
        {
            PartitionAnswer::FoundTransfers(found) => Ok(found),
            _ => unreachable!("lookups answered otherwise"),
        }
    }

    pub async fn get_account_transfers(
        &self,
        filter: AccountFilter,
    ) -> Result<Vec<Transfer>, BooksError> {
        let cluster = match self {
            Books::One { engine, .. } => return Ok(engine.get_account_transfers(filter).await?),
            Books::Cluster(cluster) => cluster,
        };
        let partition = self.home_of(filter.account_id);
        match cluster
            .on_partition(partition, PartitionOp::AccountTransfers(filter))
            .await?
        {
            PartitionAnswer::FoundTransfers(found) => Ok(found),
            _ => unreachable!("history answered otherwise"),
        }
    }

    /// The engines that run here, with the partition each serves (`None` on one node).
    pub fn local_engines(&self) -> Vec<(Option<u32>, Engine)> {
        match self {
            Books::One { engine, .. } => vec![(None, engine.clone())],
            Books::Cluster(cluster) => cluster
                .host
                .engines()
                .into_iter()
                .map(|(p, e)| (Some(p), e))
                .collect(),
        }
    }

    /// The engine counters of one node (on a cluster node, summed over its partitions).
    pub fn stats(&self) -> Vec<(Option<u32>, StatsSnapshot)> {
        self.local_engines()
            .into_iter()
            .map(|(p, e)| (p, e.stats()))
            .collect()
    }

    /// Ready: on one node, the log's store answers; on a cluster node, the lease table does.
    pub async fn ready(&self) -> Result<u64, BooksError> {
        match self {
            Books::One { wal, .. } => Ok(wal.store().last_lsn().await?),
            Books::Cluster(cluster) => {
                cluster.host.refresh_view(cluster.node_timeout).await?;
                Ok(0)
            }
        }
    }
}

/// The partition `account` lives in: the cluster's own accounts (a clearing account, a
/// partition's bank account) name theirs.
pub fn home_of(account: u128, partitions: PartitionCount) -> u32 {
    let own = clearing_account_of(account).or_else(|| kizo_wallet::ids::bank_account_of(account));
    match own {
        Some((partition, _)) if partition < partitions.get() => partition,
        _ => partition_of(account, partitions),
    }
}

/// Refuses a linked chain whose events are not all in one partition (`debits[i]` and
/// `credits[i]` are event `i`'s partitions; equal for an account).
fn check_chains(linked: &[bool], debits: &[u32], credits: &[u32]) -> Result<(), BooksError> {
    let mut chain: Option<u32> = None;
    for (index, &link) in linked.iter().enumerate() {
        let (debit, credit) = (debits[index], credits[index]);
        let in_chain = link || chain.is_some();
        if in_chain {
            if debit != credit {
                return Err(BooksError::LinkedAcrossPartitions(debit, credit));
            }
            if let Some(first) = chain.filter(|&first| first != debit) {
                return Err(BooksError::LinkedAcrossPartitions(first, debit));
            }
        }
        chain = link.then_some(debit);
    }
    Ok(())
}

/// `items` by partition (`homes[i]` is item `i`'s), each with the indexes of its items.
fn group<T>(items: Vec<T>, homes: &[u32]) -> BTreeMap<u32, (Vec<usize>, Vec<T>)> {
    let mut groups: BTreeMap<u32, (Vec<usize>, Vec<T>)> = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let (indexes, items) = groups.entry(homes[index]).or_default();
        indexes.push(index);
        items.push(item);
    }
    groups
}

/// The ledger's code for how a transfer between partitions ended.
pub fn outcome_code(outcome: CrossOutcome, retry: bool) -> CreateTransferResult {
    match outcome {
        CrossOutcome::Posted if retry => CreateTransferResult::Exists,
        CrossOutcome::Posted => CreateTransferResult::Created,
        CrossOutcome::Refused { result, .. } => result,
        CrossOutcome::NeedsReview { leg, result } => {
            tracing::error!(?leg, %result, "a cross-partition transfer needs review");
            result
        }
    }
}

impl ClusterBooks {
    /// Runs `op` on the engine of `partition`, here or at its owner; waits up to
    /// [`ROUTE_PATIENCE`] for the partition to be served.
    pub async fn on_partition(
        &self,
        partition: u32,
        op: PartitionOp,
    ) -> Result<PartitionAnswer, BooksError> {
        let deadline = tokio::time::Instant::now() + ROUTE_PATIENCE;
        let mut pause = Duration::from_millis(25);
        loop {
            if let Some(engine) = self.host.engine(partition) {
                match op.clone().run(&engine).await {
                    // Dropped between the look and the call (lost, or handed over), or a
                    // commit refused because another node acquired the partition meanwhile:
                    // ask again, wherever it is served now. Every operation is by id, so a
                    // create that was made answers `exists` the second time.
                    Err(EngineError::ShutDown | EngineError::Unavailable(_))
                        if !self.host.held().contains_key(&partition)
                            || tokio::time::Instant::now() + pause <= deadline => {}
                    answer => return Ok(answer?),
                }
            } else if let Some(address) = self.owner_address(partition) {
                match self.peers.send(&address, partition, &op).await {
                    Ok(answer) => return Ok(answer),
                    Err(PeerError::Refused { status, detail }) => {
                        return Err(BooksError::PeerRefused {
                            partition,
                            status,
                            detail,
                        })
                    }
                    Err(error) => {
                        tracing::debug!(partition, %address, %error, "a partition's owner did not serve it");
                    }
                }
            }
            if tokio::time::Instant::now() + pause > deadline {
                metrics::counter!("kizo_cluster_unserved_total").increment(1);
                return Err(BooksError::Unavailable { partition });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(400));
            if let Err(error) = self.host.refresh_view(self.node_timeout).await {
                tracing::warn!(%error, "the cluster's view could not be read");
            }
        }
    }

    /// Where the owner of `partition` is reached, by the last view; `None` when nobody
    /// else serves it (free, lapsed, or this node's own and starting).
    pub fn owner_address(&self, partition: u32) -> Option<String> {
        let view = self.host.view()?;
        let owner = view.owner_of(partition)?;
        if owner == self.host.node_id() {
            return None;
        }
        view.addresses.get(owner).cloned()
    }

    /// The partition of each transfer's debit account; a post or void that names none is
    /// where its pending transfer is.
    async fn debit_homes(&self, transfers: &[Transfer]) -> Result<Vec<u32>, BooksError> {
        let partitions = self.host.partitions();
        let unnamed: Vec<u128> = transfers
            .iter()
            .filter(|t| t.debit_account_id == 0 && t.pending_id != 0)
            .map(|t| t.pending_id)
            .collect();
        let pending: BTreeMap<u128, u128> = if unnamed.is_empty() {
            BTreeMap::new()
        } else {
            self.lookup_everywhere(unnamed)
                .await?
                .into_iter()
                .map(|t| (t.id, t.debit_account_id))
                .collect()
        };
        Ok(transfers
            .iter()
            .map(|t| {
                let debit = match t.debit_account_id {
                    0 => pending.get(&t.pending_id).copied().unwrap_or(t.pending_id),
                    debit => debit,
                };
                home_of(debit, partitions)
            })
            .collect())
    }

    /// Claims the transfers' ids for their debit partitions (see `transfer_ids`): an id
    /// another partition holds, or that the batch gives two partitions, is refused as a ledger
    /// refuses an id that exists with another debit account, with the rest of its linked
    /// chain. The refusals, by index.
    async fn claim_ids(
        &self,
        transfers: &[Transfer],
        debits: &[u32],
        linked: &[bool],
    ) -> Result<BTreeMap<usize, CreateTransferResult>, BooksError> {
        use CreateTransferResult as R;
        let mut first: BTreeMap<u128, u32> = BTreeMap::new();
        let mut refused = BTreeMap::new();
        for (index, t) in transfers.iter().enumerate() {
            // A ledger refuses these ids itself; they are never claimed.
            if t.id == 0 || t.id == u128::MAX {
                continue;
            }
            match first.get(&t.id) {
                Some(&partition) if partition != debits[index] => {
                    refused.insert(index, R::ExistsWithDifferentDebitAccountId);
                }
                Some(_) => {}
                None => {
                    first.insert(t.id, debits[index]);
                }
            }
        }
        let claims: Vec<(u128, u32)> = first.into_iter().collect();
        let held = self.cross.store().claim_ids(&claims).await?;
        for (index, t) in transfers.iter().enumerate() {
            if held.contains_key(&t.id) {
                refused.insert(index, R::ExistsWithDifferentDebitAccountId);
            }
        }
        // The rest of a refused event's chain fails with it, as in a ledger.
        let mut start = 0;
        for (index, &link) in linked.iter().enumerate() {
            if link {
                continue;
            }
            let chain = start..=index;
            start = index + 1;
            if chain.clone().count() > 1 && chain.clone().any(|i| refused.contains_key(&i)) {
                for i in chain {
                    refused.entry(i).or_insert(R::LinkedEventFailed);
                }
            }
        }
        Ok(refused)
    }

    async fn lookup_everywhere(&self, ids: Vec<u128>) -> Result<Vec<Transfer>, BooksError> {
        let answers: Vec<Result<PartitionAnswer, BooksError>> =
            futures_util::stream::iter(0..self.host.partitions().get())
                .map(|partition| {
                    self.on_partition(partition, PartitionOp::LookupTransfers(ids.clone()))
                })
                .buffer_unordered(FAN_OUT_MAX)
                .collect()
                .await;
        let mut found = BTreeMap::new();
        for answer in answers {
            let PartitionAnswer::FoundTransfers(transfers) = answer? else {
                unreachable!("lookups answered otherwise")
            };
            found.extend(transfers.into_iter().map(|t| (t.id, t)));
        }
        Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
    }

    /// Stores a transfer between partitions (or finds it), drives it to its end, and answers
    /// with the ledger's code.
    async fn cross_to_end(&self, transfer: Transfer) -> Result<CreateTransferResult, BooksError> {
        let begun = self
            .cross
            .begin(transfer)
            .await
            .map_err(|error| self.cross_error(error))?;
        match begun {
            Begun::Refused(result) => Ok(result),
            Begun::Started { cross, retry } => self.finish_cross(cross, retry).await,
        }
    }

    /// Drives a stored transfer between partitions to its end; its ledger code.
    async fn finish_cross(
        &self,
        cross: CrossTransfer,
        retry: bool,
    ) -> Result<CreateTransferResult, BooksError> {
        let cross = match cross.phase {
            Phase::Done(_) => cross,
            _ => self
                .cross
                .drive(self, cross)
                .await
                .map_err(|error| self.cross_error(error))?,
        };
        let Phase::Done(outcome) = cross.phase else {
            unreachable!("driven to its end")
        };
        Ok(outcome_code(outcome, retry))
    }

    fn cross_error(&self, error: crate::cluster::CrossError) -> BooksError {
        use crate::cluster::CrossError;
        match error {
            CrossError::Unreachable(LegError::NotServed(partition)) => {
                BooksError::Unavailable { partition }
            }
            CrossError::Unreachable(LegError::Engine(error)) => BooksError::Engine(error),
            CrossError::Unreachable(LegError::Books(error)) => *error,
            CrossError::Store(error) => BooksError::Store(error),
            CrossError::NotCrossing(_) => unreachable!("checked before it was stored"),
        }
    }
}

impl ClusterBooks {
    /// Creates those of the cluster's own `accounts` (all in `partition`) not known to exist
    /// yet, and remembers those that do.
    async fn make_own_accounts(
        &self,
        partition: u32,
        accounts: Vec<Account>,
    ) -> Result<(), BooksError> {
        let missing: Vec<Account> = {
            let known = self.own_accounts_made.lock().expect("not poisoned");
            accounts
                .into_iter()
                .filter(|a| !known.contains(&a.id))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let answer = self
            .on_partition(partition, PartitionOp::CreateAccounts(missing.clone()))
            .await?;
        if let PartitionAnswer::Accounts(results) = answer {
            let mut known = self.own_accounts_made.lock().expect("not poisoned");
            for (account, result) in missing.iter().zip(results) {
                if matches!(
                    result,
                    CreateAccountResult::Created | CreateAccountResult::Exists
                ) {
                    known.insert(account.id);
                }
            }
        }
        Ok(())
    }
}

/// The books as settlements use them on a cluster: a settlement's transfers are between a
/// wallet and its partition's bank account, which is created (once per node) before the
/// first transfer that names it.
pub struct SettlementLedger(pub Arc<ClusterBooks>);

impl SettlementLedger {
    async fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<CreateTransferResult>, EngineError> {
        let partitions = self.0.host.partitions();
        for account in transfers
            .iter()
            .flat_map(|t| [t.debit_account_id, t.credit_account_id])
        {
            if let Some((partition, ledger)) = kizo_wallet::ids::bank_account_of(account)
                .filter(|&(partition, _)| partition < partitions.get())
            {
                self.0
                    .make_own_accounts(
                        partition,
                        vec![kizo_wallet::codes::bank_account_in(ledger, partition)],
                    )
                    .await
                    .map_err(engine_error)?;
            }
        }
        Books::Cluster(self.0.clone())
            .create_transfers(transfers)
            .await
            .map_err(engine_error)
    }
}

/// What a settlement makes of the books' refusals: each is worth a later retry (the
/// settlement's transfers are the server's own, so none is a caller's mistake).
fn engine_error(error: BooksError) -> EngineError {
    match error {
        BooksError::Engine(error) => error,
        other => EngineError::Unavailable(other.to_string()),
    }
}

impl kizo_engine::settlement_actors::LedgerPort for SettlementLedger {
    fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
    ) -> kizo_engine::settlement_actors::PortFuture<
        '_,
        Result<Vec<CreateTransferResult>, EngineError>,
    > {
        Box::pin(SettlementLedger::create_transfers(self, transfers))
    }

    fn lookup_accounts(
        &self,
        ids: Vec<u128>,
    ) -> kizo_engine::settlement_actors::PortFuture<'_, Result<Vec<Account>, EngineError>> {
        Box::pin(async move {
            Books::Cluster(self.0.clone())
                .lookup_accounts(ids)
                .await
                .map_err(engine_error)
        })
    }
}

impl LegRouter for ClusterBooks {
    fn create(&self, partition: u32, accounts: Vec<Account>, leg: Transfer) -> LegFuture<'_> {
        Box::pin(async move {
            let to_leg_error = |error: BooksError| match error {
                BooksError::Unavailable { partition } => LegError::NotServed(partition),
                other => LegError::Books(Box::new(other)),
            };
            self.make_own_accounts(partition, accounts)
                .await
                .map_err(to_leg_error)?;
            match self
                .on_partition(partition, PartitionOp::CreateTransfers(vec![leg]))
                .await
                .map_err(to_leg_error)?
            {
                PartitionAnswer::Transfers(results, _) => Ok(results[0]),
                _ => unreachable!("transfers answered otherwise"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_in_one_partition_passes_and_one_across_two_is_refused() {
        // Events: a chain of two in partition 1, a lone one crossing 1 -> 2, a chain 3, 3 -> 4.
        let linked = [true, false, false, true, false];
        let debits = [1, 1, 1, 3, 3];
        let credits = [1, 1, 2, 3, 4];
        assert!(matches!(
            check_chains(&linked, &debits, &credits),
            Err(BooksError::LinkedAcrossPartitions(3, 4))
        ));
        assert!(check_chains(&linked[..3], &debits[..3], &credits[..3]).is_ok());
        // A chain whose second event is in another partition.
        assert!(matches!(
            check_chains(&[true, false], &[1, 2], &[1, 2]),
            Err(BooksError::LinkedAcrossPartitions(1, 2))
        ));
    }

    #[test]
    fn groups_keep_each_items_index() {
        let groups = group(vec!['a', 'b', 'c', 'd'], &[2, 0, 2, 1]);
        assert_eq!(groups[&2], (vec![0, 2], vec!['a', 'c']));
        assert_eq!(groups[&0], (vec![1], vec!['b']));
        assert_eq!(groups[&1], (vec![3], vec!['d']));
    }

    #[test]
    fn the_clusters_own_accounts_live_in_the_partitions_they_name() {
        let partitions = PartitionCount::new(8).unwrap();
        for partition in 0..8 {
            let id = kizo_cluster::legs::clearing_account_id(840, partition);
            assert_eq!(home_of(id, partitions), partition);
            let bank = kizo_wallet::ids::bank_account_id_in(840, partition);
            assert_eq!(home_of(bank, partitions), partition);
        }
        assert_eq!(home_of(42, partitions), partition_of(42, partitions));
    }
}
