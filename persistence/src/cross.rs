//! Transfers between accounts of two partitions, in PostgreSQL (issue 28): each is written
//! before its first leg and after every leg's answer (a compare-and-set on its phase), so
//! that whoever serves the source partition next resumes it where it stood. The protocol is
//! `kizo_cluster::legs`'; this stores it.

use kizo_cluster::legs::{CrossTransfer, Phase};
use kizo_engine::{Transfer, TransferFlags};
use sqlx::postgres::PgPool;

use crate::store::{read_error, StoreError};

/// The most unfinished transfers one resumption reads.
pub const RESUME_MAX: i64 = 10_000;

#[derive(Clone, Debug)]
pub struct CrossStore {
    pool: PgPool,
}

/// Ids one [`CrossStore::load_many`] reads at most (a page of history).
pub const LOAD_MAX: usize = 8189;

/// See [`CrossStore::unfinished_summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnfinishedSummary {
    pub unfinished: u64,
    pub oldest_created_ms: Option<u64>,
    pub late: u64,
}

/// What [`CrossStore::create`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrossCreated {
    Created,
    /// A transfer with this id exists: this one (the caller compares).
    Exists(Box<CrossTransfer>),
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    source: i32,
    destination: i32,
    debit_account_id: String,
    credit_account_id: String,
    amount: String,
    ledger: i64,
    code: i32,
    user_data_128: String,
    user_data_64: String,
    user_data_32: i64,
    phase: String,
    created_ms: i64,
}

impl Row {
    fn decode(self) -> Result<CrossTransfer, StoreError> {
        let bad =
            |what: &str| StoreError::Corrupt(format!("cross transfer {}: bad {what}", self.id));
        let transfer = Transfer {
            user_data_128: self
                .user_data_128
                .parse()
                .map_err(|_| bad("user_data_128"))?,
            user_data_64: self.user_data_64.parse().map_err(|_| bad("user_data_64"))?,
            user_data_32: u32::try_from(self.user_data_32).map_err(|_| bad("user_data_32"))?,
            flags: TransferFlags::empty(),
            ..Transfer::new(
                u128::from_str_radix(&self.id, 16).map_err(|_| bad("id"))?,
                self.debit_account_id
                    .parse()
                    .map_err(|_| bad("debit_account_id"))?,
                self.credit_account_id
                    .parse()
                    .map_err(|_| bad("credit_account_id"))?,
                self.amount.parse().map_err(|_| bad("amount"))?,
                u32::try_from(self.ledger).map_err(|_| bad("ledger"))?,
                u16::try_from(self.code).map_err(|_| bad("code"))?,
            )
        };
        Ok(CrossTransfer {
            transfer,
            source: u32::try_from(self.source).map_err(|_| bad("source"))?,
            destination: u32::try_from(self.destination).map_err(|_| bad("destination"))?,
            phase: Phase::parse(&self.phase).ok_or_else(|| bad("phase"))?,
        })
    }
}

impl CrossStore {
    /// On the pool of the cluster's store (its migrations run).
    pub fn new(pool: PgPool) -> CrossStore {
        CrossStore { pool }
    }

    /// Writes a new cross-partition transfer at its first phase, unless its id exists.
    pub async fn create(
        &self,
        cross: &CrossTransfer,
        now_ms: u64,
    ) -> Result<CrossCreated, StoreError> {
        let t = &cross.transfer;
        let inserted = sqlx::query(
            "INSERT INTO cross_transfers (id, source, destination, debit_account_id,
                 credit_account_id, amount, ledger, code, user_data_128, user_data_64,
                 user_data_32, phase, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(format!("{:032x}", t.id))
        .bind(cross.source as i32)
        .bind(cross.destination as i32)
        .bind(t.debit_account_id.to_string())
        .bind(t.credit_account_id.to_string())
        .bind(t.amount.to_string())
        .bind(i64::from(t.ledger))
        .bind(i32::from(t.code))
        .bind(t.user_data_128.to_string())
        .bind(t.user_data_64.to_string())
        .bind(i64::from(t.user_data_32))
        .bind(cross.phase.code())
        .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(read_error)?;
        if inserted.rows_affected() == 1 {
            return Ok(CrossCreated::Created);
        }
        let existing = self
            .load(t.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a cross transfer vanished".into()))?;
        Ok(CrossCreated::Exists(Box::new(existing)))
    }

    /// Writes the transfer's next phase if its stored phase is still `from`.
    pub async fn save(
        &self,
        from: Phase,
        cross: &CrossTransfer,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let saved = sqlx::query(
            "UPDATE cross_transfers SET phase = $3, updated_ms = $4 WHERE id = $1 AND phase = $2",
        )
        .bind(format!("{:032x}", cross.transfer.id))
        .bind(from.code())
        .bind(cross.phase.code())
        .bind(i64::try_from(now_ms).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(read_error)?;
        if saved.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Superseded(format!(
                "cross transfer {:032x} is no longer at {}",
                cross.transfer.id,
                from.code()
            )))
        }
    }

    /// The transfers among `ids` that are stored, each with when it was first asked for
    /// (the database's milliseconds); at most [`LOAD_MAX`] ids.
    pub async fn load_many(&self, ids: &[u128]) -> Result<Vec<(CrossTransfer, u64)>, StoreError> {
        assert!(ids.len() <= LOAD_MAX, "the caller bounds the ids");
        let keys: Vec<String> = ids.iter().map(|id| format!("{id:032x}")).collect();
        let rows: Vec<Row> = sqlx::query_as("SELECT * FROM cross_transfers WHERE id = ANY($1)")
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(read_error)?;
        rows.into_iter()
            .map(|row| {
                let created_ms = u64::try_from(row.created_ms).unwrap_or(0);
                Ok((row.decode()?, created_ms))
            })
            .collect()
    }

    pub async fn load(&self, id: u128) -> Result<Option<CrossTransfer>, StoreError> {
        let row: Option<Row> = sqlx::query_as("SELECT * FROM cross_transfers WHERE id = $1")
            .bind(format!("{id:032x}"))
            .fetch_optional(&self.pool)
            .await
            .map_err(read_error)?;
        row.map(Row::decode).transpose()
    }

    /// Claims each transfer id for its partition (`(id, partition)`); the ids already
    /// claimed by another partition, with that partition. Two statements: an id a concurrent
    /// claim committed between them is read by the second.
    pub async fn claim_ids(
        &self,
        claims: &[(u128, u32)],
    ) -> Result<std::collections::BTreeMap<u128, u32>, StoreError> {
        let ids: Vec<uuid::Uuid> = claims
            .iter()
            .map(|&(id, _)| uuid::Uuid::from_u128(id))
            .collect();
        let partitions: Vec<i32> = claims.iter().map(|&(_, p)| p as i32).collect();
        let claimed: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "INSERT INTO transfer_ids (id, partition)
             SELECT * FROM UNNEST($1::uuid[], $2::int[])
             ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .bind(&ids)
        .bind(&partitions)
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        let claimed: std::collections::BTreeSet<u128> =
            claimed.into_iter().map(|(id,)| id.as_u128()).collect();
        let earlier: Vec<uuid::Uuid> = ids
            .iter()
            .filter(|id| !claimed.contains(&id.as_u128()))
            .copied()
            .collect();
        if earlier.is_empty() {
            return Ok(Default::default());
        }
        let holders: Vec<(uuid::Uuid, i32)> =
            sqlx::query_as("SELECT id, partition FROM transfer_ids WHERE id = ANY($1)")
                .bind(&earlier)
                .fetch_all(&self.pool)
                .await
                .map_err(read_error)?;
        let holders: std::collections::BTreeMap<u128, u32> = holders
            .into_iter()
            .map(|(id, p)| (id.as_u128(), p as u32))
            .collect();
        Ok(claims
            .iter()
            .filter_map(|&(id, partition)| match holders.get(&id) {
                Some(&holder) if holder != partition => Some((id, holder)),
                _ => None,
            })
            .collect())
    }

    /// How many transfers are unfinished, when the oldest was created, and how many were
    /// created before `late_before_ms` (the database's milliseconds).
    pub async fn unfinished_summary(
        &self,
        late_before_ms: u64,
    ) -> Result<UnfinishedSummary, StoreError> {
        let (unfinished, oldest, late): (i64, Option<i64>, i64) = sqlx::query_as(
            "SELECT count(*), min(created_ms), count(*) FILTER (WHERE created_ms < $1)
             FROM cross_transfers
             WHERE phase IN ('hold', 'credit', 'post') OR phase LIKE 'void:%'",
        )
        .bind(i64::try_from(late_before_ms).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(read_error)?;
        Ok(UnfinishedSummary {
            unfinished: u64::try_from(unfinished).unwrap_or(0),
            oldest_created_ms: oldest.and_then(|ms| u64::try_from(ms).ok()),
            late: u64::try_from(late).unwrap_or(0),
        })
    }

    /// The ledgers of every transfer between partitions so far.
    pub async fn ledgers(&self) -> Result<std::collections::BTreeSet<u32>, StoreError> {
        let ledgers: Vec<(i64,)> = sqlx::query_as("SELECT DISTINCT ledger FROM cross_transfers")
            .fetch_all(&self.pool)
            .await
            .map_err(read_error)?;
        Ok(ledgers
            .into_iter()
            .filter_map(|(ledger,)| u32::try_from(ledger).ok())
            .collect())
    }

    /// The unfinished transfers whose source is `partition`, last written before
    /// `updated_before_ms`, oldest first.
    pub async fn unfinished(
        &self,
        partition: u32,
        updated_before_ms: u64,
    ) -> Result<Vec<CrossTransfer>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT * FROM cross_transfers
             WHERE source = $1 AND (phase IN ('hold', 'credit', 'post') OR phase LIKE 'void:%')
               AND updated_ms <= $3
             ORDER BY created_ms, id LIMIT $2",
        )
        .bind(partition as i32)
        .bind(RESUME_MAX)
        .bind(i64::try_from(updated_before_ms).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        rows.into_iter().map(Row::decode).collect()
    }
}
