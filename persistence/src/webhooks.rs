//! Webhooks: the endpoints registered, one delivery per event and endpoint, and how far each
//! partition's log has been fanned out. In PostgreSQL beside the log; in the embedded store in
//! `webhooks.db`.
//!
//! A commit's deliveries and the progress past it are written in one transaction, moved only
//! from the progress the writer read (compare-and-set): no event is enqueued twice or skipped,
//! whoever fans out. A delivery is claimed before it is attempted (its due time moved past
//! the attempt's end, rows locked by another claimer skipped), and its outcome is written only
//! if the claim still holds: two nodes never attempt it at once, and one that died mid-attempt
//! leaves it to be claimed again when the claim runs out (at least once, as webhooks are).

use kizo_webhooks::{Delivery, DeliveryState};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::store::read_error;
use crate::store::{dialect, on_pool, open_pools, Pools, StoreConfig, StoreError};

#[derive(Clone, Debug)]
pub enum WebhookStore {
    Postgres(PgPool),
    Embedded(SqlitePool),
}

/// An endpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    /// `ledger` (the ledger API's key holder) or `user:<id>`.
    pub owner: String,
    pub url: String,
    /// Sorted event kinds, or `["*"]`.
    pub kinds: Vec<String>,
    /// `whsec_...`.
    pub secret: String,
    /// A user's endpoint hears its wallet's events only; `None`: every ledger's.
    pub wallet: Option<u128>,
    pub created_ms: u64,
}

/// One event for one endpoint, to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    pub endpoint_id: String,
    pub event_id: String,
    pub partition: u32,
    pub lsn: u64,
    pub index: u32,
    pub kind: String,
    pub body: String,
    /// Written parked, never attempted until replayed (the endpoint's backlog is full).
    pub parked: Option<String>,
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDelivery {
    pub endpoint_id: String,
    pub event_id: String,
    pub partition: u32,
    pub lsn: u64,
    pub index: u32,
    pub kind: String,
    pub body: String,
    pub delivery: Delivery,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Which deliveries to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    Pending,
    Delivered,
    Parked,
}

impl StateFilter {
    pub fn code(self) -> &'static str {
        match self {
            StateFilter::Pending => "pending",
            StateFilter::Delivered => "delivered",
            StateFilter::Parked => "parked",
        }
    }
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: String,
    owner: String,
    url: String,
    kinds: String,
    secret: String,
    wallet: Option<String>,
    created_ms: i64,
}

impl EndpointRow {
    fn decode(self) -> Result<Endpoint, StoreError> {
        let bad =
            |what: &str| StoreError::Corrupt(format!("webhook endpoint {}: bad {what}", self.id));
        Ok(Endpoint {
            wallet: match &self.wallet {
                Some(wallet) => Some(wallet.parse().map_err(|_| bad("wallet"))?),
                None => None,
            },
            created_ms: u64::try_from(self.created_ms).map_err(|_| bad("created_ms"))?,
            kinds: self.kinds.split(',').map(str::to_string).collect(),
            id: self.id,
            owner: self.owner,
            url: self.url,
            secret: self.secret,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    endpoint_id: String,
    event_id: String,
    partition: i32,
    lsn: i64,
    idx: i32,
    kind: String,
    body: String,
    state: String,
    due_ms: i64,
    attempts: i32,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl DeliveryRow {
    fn decode(self) -> Result<StoredDelivery, StoreError> {
        let bad = |what: &str| {
            StoreError::Corrupt(format!(
                "webhook delivery {} of {}: bad {what}",
                self.event_id, self.endpoint_id
            ))
        };
        let updated_ms = u64::try_from(self.updated_ms).map_err(|_| bad("updated_ms"))?;
        let state = match self.state.as_str() {
            "pending" => DeliveryState::Pending {
                due_ms: u64::try_from(self.due_ms).map_err(|_| bad("due_ms"))?,
            },
            "delivered" => DeliveryState::Delivered { at_ms: updated_ms },
            "parked" => DeliveryState::Parked { at_ms: updated_ms },
            _ => return Err(bad("state")),
        };
        Ok(StoredDelivery {
            partition: u32::try_from(self.partition).map_err(|_| bad("partition"))?,
            lsn: u64::try_from(self.lsn).map_err(|_| bad("lsn"))?,
            index: u32::try_from(self.idx).map_err(|_| bad("idx"))?,
            delivery: Delivery {
                state,
                attempts: u32::try_from(self.attempts).map_err(|_| bad("attempts"))?,
                last_error: self.last_error,
            },
            created_ms: u64::try_from(self.created_ms).map_err(|_| bad("created_ms"))?,
            updated_ms,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            kind: self.kind,
            body: self.body,
        })
    }
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A delivery's state column and due time.
fn state_columns(delivery: &Delivery) -> (&'static str, u64) {
    match delivery.state {
        DeliveryState::Pending { due_ms } => ("pending", due_ms),
        DeliveryState::Delivered { at_ms } => ("delivered", at_ms),
        DeliveryState::Parked { at_ms } => ("parked", at_ms),
    }
}

const BUMP_VERSION: &str =
    "UPDATE webhook_endpoints_version SET version = version + 1 WHERE id = 1";

/// Deliveries written per statement when a step is enqueued.
const INSERT_ROWS: usize = 256;

impl WebhookStore {
    pub async fn open(config: &StoreConfig) -> Result<WebhookStore, StoreError> {
        let migrations = sqlx::migrate!("./migrations/sqlite_webhooks");
        Ok(
            // Two connections: every statement here is short, and a cluster node's followers
            // (one per partition) would otherwise each hold one of the database's few.
            match open_pools(config, 2, "webhooks.db", &migrations).await? {
                Pools::Postgres(pool) => WebhookStore::Postgres(pool),
                Pools::Embedded(pool) => WebhookStore::Embedded(pool),
            },
        )
    }

    fn sql(&self, sql: &'static str) -> std::borrow::Cow<'static, str> {
        dialect(sql, matches!(self, WebhookStore::Postgres(_)))
    }

    /// Writes `endpoint` unless its owner has `per_owner_max` already (`false` then). One
    /// statement: two registrations at the same instant may both pass at `per_owner_max - 1`.
    pub async fn register(
        &self,
        endpoint: &Endpoint,
        per_owner_max: usize,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "INSERT INTO webhook_endpoints (id, owner, url, kinds, secret, wallet, created_ms)
             SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE (SELECT count(*) FROM webhook_endpoints WHERE owner = $2) < $8",
        );
        let done = on_pool!(WebhookStore, self, pool => async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&sql)
                .bind(&endpoint.id)
                .bind(&endpoint.owner)
                .bind(&endpoint.url)
                .bind(endpoint.kinds.join(","))
                .bind(&endpoint.secret)
                .bind(endpoint.wallet.map(|w| w.to_string()))
                .bind(ms(endpoint.created_ms))
                .bind(count(per_owner_max))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done.rows_affected())
        }.await)
        .map_err(read_error)?;
        Ok(done == 1)
    }

    /// `owner`'s endpoints, oldest first.
    pub async fn endpoints_of(&self, owner: &str) -> Result<Vec<Endpoint>, StoreError> {
        let sql =
            self.sql("SELECT * FROM webhook_endpoints WHERE owner = $1 ORDER BY created_ms, id");
        let rows = on_pool!(WebhookStore, self, pool => sqlx::query_as::<_, EndpointRow>(&sql)
            .bind(owner)
            .fetch_all(pool)
            .await)
        .map_err(read_error)?;
        rows.into_iter().map(EndpointRow::decode).collect()
    }

    /// Every endpoint, at most `limit`.
    pub async fn all_endpoints(&self, limit: usize) -> Result<Vec<Endpoint>, StoreError> {
        let sql = self.sql("SELECT * FROM webhook_endpoints ORDER BY created_ms, id LIMIT $1");
        let rows = on_pool!(WebhookStore, self, pool => sqlx::query_as::<_, EndpointRow>(&sql)
            .bind(count(limit))
            .fetch_all(pool)
            .await)
        .map_err(read_error)?;
        rows.into_iter().map(EndpointRow::decode).collect()
    }

    /// Removes `owner`'s endpoint `id` and its deliveries; `false` when it has no such one.
    pub async fn remove(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let endpoint = self.sql("DELETE FROM webhook_endpoints WHERE owner = $1 AND id = $2");
        let deliveries = self.sql("DELETE FROM webhook_deliveries WHERE endpoint_id = $1");
        on_pool!(WebhookStore, self, pool => async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&endpoint).bind(owner).bind(id).execute(&mut *tx).await?;
            if done.rows_affected() == 1 {
                sqlx::query(&deliveries).bind(id).execute(&mut *tx).await?;
                sqlx::query(BUMP_VERSION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done.rows_affected() == 1)
        }.await)
        .map_err(read_error)
    }

    /// A number every registration and removal moves (in its own transaction): endpoints
    /// read after it was read are at least as new as it says.
    pub async fn endpoints_version(&self) -> Result<u64, StoreError> {
        let sql = "SELECT version FROM webhook_endpoints_version WHERE id = 1";
        let version = on_pool!(WebhookStore, self, pool => sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await)
        .map_err(read_error)?;
        Ok(version.max(0) as u64)
    }

    /// The last commit of `partition`'s log fanned out, if it ever was.
    pub async fn progress(&self, partition: u32) -> Result<Option<u64>, StoreError> {
        let sql = self.sql("SELECT lsn FROM webhook_progress WHERE partition = $1");
        let lsn = on_pool!(WebhookStore, self, pool => sqlx::query_scalar::<_, i64>(&sql)
            .bind(partition as i32)
            .fetch_optional(pool)
            .await)
        .map_err(read_error)?;
        Ok(lsn.map(|lsn| lsn.max(0) as u64))
    }

    /// Writes `deliveries` (those already written are left as they are) and moves
    /// `partition`'s progress from `from` (`None`: never written) to `to`, in one transaction.
    /// [`StoreError::Superseded`] when the progress is not `from` any more (another node fans
    /// the partition out now): nothing is written.
    pub async fn enqueue(
        &self,
        partition: u32,
        from: Option<u64>,
        to: u64,
        deliveries: &[NewDelivery],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        assert!(from.is_none_or(|from| from <= to), "progress moves forward");
        let advance = match from {
            Some(_) => self.sql("UPDATE webhook_progress SET lsn = $2 WHERE partition = $1 AND lsn = $3"),
            None => self.sql(
                "INSERT INTO webhook_progress (partition, lsn) VALUES ($1, $2) ON CONFLICT (partition) DO NOTHING",
            ),
        };
        let postgres = matches!(self, WebhookStore::Postgres(_));
        let moved = on_pool!(WebhookStore, self, pool => async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&advance)
                .bind(partition as i32)
                .bind(ms(to))
                .bind(ms(from.unwrap_or(0)))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                return Ok::<_, sqlx::Error>(false);
            }
            for chunk in deliveries.chunks(INSERT_ROWS) {
                let sql = insert_deliveries(chunk.len(), postgres);
                let mut query = sqlx::query(&sql);
                for d in chunk {
                    let (state, due_ms) = match &d.parked {
                        Some(_) => ("parked", now_ms),
                        None => ("pending", now_ms),
                    };
                    query = query
                        .bind(&d.endpoint_id)
                        .bind(&d.event_id)
                        .bind(d.partition as i32)
                        .bind(ms(d.lsn))
                        .bind(d.index as i32)
                        .bind(&d.kind)
                        .bind(&d.body)
                        .bind(state)
                        .bind(ms(due_ms))
                        .bind(d.parked.as_deref())
                        .bind(ms(now_ms));
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        }.await)
        .map_err(read_error)?;
        if moved {
            Ok(())
        } else {
            Err(StoreError::Superseded(format!(
                "webhook progress of partition {partition} moved from {from:?}"
            )))
        }
    }

    /// Endpoints with a delivery due at `now_ms`, at most `limit`.
    pub async fn due_endpoints(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let sql = self.sql(
            "SELECT DISTINCT endpoint_id FROM webhook_deliveries WHERE state = 'pending' AND due_ms <= $1 LIMIT $2",
        );
        on_pool!(WebhookStore, self, pool => sqlx::query_scalar::<_, String>(&sql)
            .bind(ms(now_ms))
            .bind(count(limit))
            .fetch_all(pool)
            .await)
        .map_err(read_error)
    }

    /// Claims up to `limit` of `endpoint_id`'s deliveries due at `now_ms`, in log order, until
    /// `claim_until_ms` (their due time moves there: nobody else claims them meanwhile).
    pub async fn claim(
        &self,
        endpoint_id: &str,
        now_ms: u64,
        claim_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        assert!(claim_until_ms > now_ms, "a claim lasts");
        let sql: std::borrow::Cow<'static, str> = match self {
            WebhookStore::Postgres(_) => "UPDATE webhook_deliveries SET due_ms = $3
                 WHERE (endpoint_id, event_id) IN (
                   SELECT endpoint_id, event_id FROM webhook_deliveries
                   WHERE endpoint_id = $1 AND state = 'pending' AND due_ms <= $2
                   ORDER BY partition, lsn, idx LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING *"
                .into(),
            WebhookStore::Embedded(_) => self.sql(
                "UPDATE webhook_deliveries SET due_ms = $3
                 WHERE (endpoint_id, event_id) IN (
                   SELECT endpoint_id, event_id FROM webhook_deliveries
                   WHERE endpoint_id = $1 AND state = 'pending' AND due_ms <= $2
                   ORDER BY partition, lsn, idx LIMIT $4)
                 RETURNING *",
            ),
        };
        let rows = on_pool!(WebhookStore, self, pool => sqlx::query_as::<_, DeliveryRow>(&sql)
            .bind(endpoint_id)
            .bind(ms(now_ms))
            .bind(ms(claim_until_ms))
            .bind(count(limit))
            .fetch_all(pool)
            .await)
        .map_err(read_error)?;
        let mut claimed: Vec<StoredDelivery> = rows
            .into_iter()
            .map(DeliveryRow::decode)
            .collect::<Result<_, _>>()?;
        claimed.sort_by_key(|d| (d.partition, d.lsn, d.index));
        Ok(claimed)
    }

    /// Writes what an attempt made of `claimed` (as [`WebhookStore::claim`] returned it), if
    /// the claim still holds; `false` when it ran out and another claimer took it.
    pub async fn record(
        &self,
        claimed: &StoredDelivery,
        to: &Delivery,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let DeliveryState::Pending { due_ms: claim } = claimed.delivery.state else {
            panic!("only a claimed (pending) delivery is recorded");
        };
        let (state, due_ms) = state_columns(to);
        let sql = self.sql(
            "UPDATE webhook_deliveries SET state = $3, due_ms = $4, attempts = $5, last_error = $6, updated_ms = $7
             WHERE endpoint_id = $1 AND event_id = $2 AND state = 'pending' AND attempts = $8 AND due_ms = $9",
        );
        let done = on_pool!(WebhookStore, self, pool => sqlx::query(&sql)
            .bind(&claimed.endpoint_id)
            .bind(&claimed.event_id)
            .bind(state)
            .bind(ms(due_ms))
            .bind(to.attempts as i32)
            .bind(to.last_error.as_deref())
            .bind(ms(now_ms))
            .bind(claimed.delivery.attempts as i32)
            .bind(ms(claim))
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(read_error)?;
        Ok(done == 1)
    }

    /// `endpoint_id`'s deliveries in `state` (any when `None`), newest first, at most `limit`,
    /// older than `before` (an event's place in the log: the page after one that ended there).
    pub async fn deliveries(
        &self,
        endpoint_id: &str,
        state: Option<StateFilter>,
        before: Option<(u32, u64, u32)>,
        limit: usize,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        let sql = self.sql(
            "SELECT * FROM webhook_deliveries
             WHERE endpoint_id = $1 AND ($2 = '' OR state = $2)
               AND (partition, lsn, idx) < ($3, $4, $5)
             ORDER BY partition DESC, lsn DESC, idx DESC LIMIT $6",
        );
        let (partition, lsn, index) =
            before.unwrap_or((u32::MAX >> 1, i64::MAX as u64, u32::MAX >> 1));
        let rows = on_pool!(WebhookStore, self, pool => sqlx::query_as::<_, DeliveryRow>(&sql)
            .bind(endpoint_id)
            .bind(state.map(StateFilter::code).unwrap_or(""))
            .bind(partition.min(i32::MAX as u32) as i32)
            .bind(ms(lsn))
            .bind(index.min(i32::MAX as u32) as i32)
            .bind(count(limit))
            .fetch_all(pool)
            .await)
        .map_err(read_error)?;
        rows.into_iter().map(DeliveryRow::decode).collect()
    }

    /// Parked deliveries of `endpoint_id` made due at `now_ms` with a new round of attempts:
    /// those of `event_ids`, or (when `None`) every parked one, at most `limit`, in one
    /// statement. Returns how many. Uses [`Delivery::replay`]'s rule: attempts start again,
    /// the reason stays.
    pub async fn replay(
        &self,
        endpoint_id: &str,
        event_ids: Option<&[String]>,
        now_ms: u64,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let parked = Delivery {
            state: DeliveryState::Parked { at_ms: now_ms },
            attempts: 0,
            last_error: None,
        };
        let again = parked
            .replay(now_ms)
            .expect("a parked delivery is replayed");
        let DeliveryState::Pending { due_ms } = again.state else {
            unreachable!("a replay is pending");
        };
        let mark = if matches!(self, WebhookStore::Postgres(_)) {
            '$'
        } else {
            '?'
        };
        let mut sql = format!(
            "UPDATE webhook_deliveries SET state = 'pending', due_ms = {mark}2, attempts = {mark}3, updated_ms = {mark}4
             WHERE (endpoint_id, event_id) IN (
               SELECT endpoint_id, event_id FROM webhook_deliveries
               WHERE endpoint_id = {mark}1 AND state = 'parked'"
        );
        let ids = event_ids.unwrap_or_default();
        if event_ids.is_some() {
            if ids.is_empty() {
                return Ok(0);
            }
            let marks: Vec<String> = (0..ids.len()).map(|n| format!("{mark}{}", n + 6)).collect();
            sql.push_str(&format!(" AND event_id IN ({})", marks.join(", ")));
        }
        sql.push_str(&format!(" LIMIT {mark}5)"));
        on_pool!(WebhookStore, self, pool => {
            let mut query = sqlx::query(&sql)
                .bind(endpoint_id)
                .bind(ms(due_ms))
                .bind(again.attempts as i32)
                .bind(ms(now_ms))
                .bind(count(limit));
            for id in ids {
                query = query.bind(id);
            }
            query.execute(pool).await.map(|done| done.rows_affected())
        })
        .map_err(read_error)
    }

    /// Undelivered (pending) deliveries per endpoint.
    pub async fn pending_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let sql = "SELECT endpoint_id, count(*) FROM webhook_deliveries WHERE state = 'pending' GROUP BY endpoint_id";
        let rows: Vec<(String, i64)> =
            on_pool!(WebhookStore, self, pool => sqlx::query_as(sql).fetch_all(pool).await)
                .map_err(read_error)?;
        Ok(rows
            .into_iter()
            .map(|(endpoint, n)| (endpoint, n.max(0) as u64))
            .collect())
    }

    /// Forgets deliveries delivered before `before_ms`, at most `limit`; returns how many.
    pub async fn prune_delivered(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        let sql = self.sql(
            "DELETE FROM webhook_deliveries WHERE (endpoint_id, event_id) IN (
               SELECT endpoint_id, event_id FROM webhook_deliveries
               WHERE state = 'delivered' AND updated_ms < $1 LIMIT $2)",
        );
        on_pool!(WebhookStore, self, pool => sqlx::query(&sql)
            .bind(ms(before_ms))
            .bind(count(limit))
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(read_error)
    }
}

/// An INSERT of `rows` deliveries, 11 parameters each; a delivery already written stays.
fn insert_deliveries(rows: usize, postgres: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO webhook_deliveries (endpoint_id, event_id, partition, lsn, idx, kind, body, state, due_ms, last_error, created_ms, attempts, updated_ms) VALUES ",
    );
    let mark = if postgres { '$' } else { '?' };
    for row in 0..rows {
        let base = row * 11;
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 1..=11 {
            sql.push_str(&format!("{mark}{}, ", base + column));
        }
        // attempts, then updated_ms = created_ms.
        sql.push_str(&format!("0, {mark}{})", base + 11));
    }
    sql.push_str(" ON CONFLICT (endpoint_id, event_id) DO NOTHING");
    sql
}
