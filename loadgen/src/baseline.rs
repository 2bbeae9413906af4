//! The design Kizo replaces, built faithfully: a PostgreSQL balances table and a journal; each
//! transfer is one transaction that locks both rows (`SELECT ... FOR UPDATE`, in id order, so two
//! transfers never deadlock), checks the balance, updates both rows and inserts the journal row;
//! a pool of connections sized for the machine. Its own schema per run, dropped by `close`.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::target::{Balance, Move, RequestOutcome, Unknown};

pub struct Rowlock {
    pool: PgPool,
    schema: String,
}

fn store(error: sqlx::Error) -> Unknown {
    Unknown::new("postgres", error)
}

fn uuid(id: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(id)
}

impl Rowlock {
    /// Connects with `pool_size` connections and creates the schema `schema`.
    pub async fn open(url: &str, schema: &str, pool_size: u32) -> Result<Rowlock, Unknown> {
        let setup = PgPool::connect(url).await.map_err(store)?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&setup)
            .await
            .map_err(store)?;
        setup.close().await;
        let search_path = format!("SET search_path TO {schema}");
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .after_connect(move |connection, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    sqlx::query(&search_path).execute(&mut *connection).await?;
                    sqlx::query("SET synchronous_commit TO on")
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(store)?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS balances (
                id UUID PRIMARY KEY,
                balance BIGINT NOT NULL,
                debits BIGINT NOT NULL DEFAULT 0,
                credits BIGINT NOT NULL DEFAULT 0,
                may_overdraw BOOLEAN NOT NULL)",
            "CREATE TABLE IF NOT EXISTS journal (
                id UUID PRIMARY KEY,
                debit_account UUID NOT NULL REFERENCES balances (id),
                credit_account UUID NOT NULL REFERENCES balances (id),
                amount BIGINT NOT NULL CHECK (amount > 0),
                created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        ] {
            sqlx::query(ddl).execute(&pool).await.map_err(store)?;
        }
        Ok(Rowlock {
            pool,
            schema: schema.to_string(),
        })
    }

    pub async fn create_accounts(&self, system: u128, wallets: &[u128]) -> Result<(), Unknown> {
        let mut ids = vec![uuid(system)];
        let mut overdraw = vec![true];
        ids.extend(wallets.iter().map(|&id| uuid(id)));
        overdraw.extend(wallets.iter().map(|_| false));
        sqlx::query(
            "INSERT INTO balances (id, balance, may_overdraw)
             SELECT id, 0, o FROM UNNEST($1::uuid[], $2::bool[]) AS t (id, o)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(ids)
        .bind(overdraw)
        .execute(&self.pool)
        .await
        .map_err(store)?;
        Ok(())
    }

    /// Each transfer in its own transaction, one after the other (the design has no batches).
    pub async fn transfers(&self, moves: &[Move]) -> Result<Vec<RequestOutcome>, Unknown> {
        let mut outcomes = Vec::with_capacity(moves.len());
        for m in moves {
            outcomes.push(self.transfer(m).await?);
        }
        Ok(outcomes)
    }

    async fn transfer(&self, m: &Move) -> Result<RequestOutcome, Unknown> {
        if m.from == m.to {
            return Ok(RequestOutcome::Refused("same_account".into()));
        }
        let amount = i64::try_from(m.amount).map_err(|_| Unknown::new("amount", m.amount))?;
        let mut tx = self.pool.begin().await.map_err(store)?;
        let rows = sqlx::query(
            "SELECT id, balance, may_overdraw FROM balances WHERE id = ANY($1)
             ORDER BY id FOR UPDATE",
        )
        .bind(vec![uuid(m.from), uuid(m.to)])
        .fetch_all(&mut *tx)
        .await
        .map_err(store)?;
        let from = rows
            .iter()
            .find(|r| r.get::<uuid::Uuid, _>("id") == uuid(m.from));
        let Some(from) = from else {
            return Ok(RequestOutcome::Refused("debit_account_not_found".into()));
        };
        if rows.len() < 2 {
            return Ok(RequestOutcome::Refused("credit_account_not_found".into()));
        }
        let inserted = sqlx::query(
            "INSERT INTO journal (id, debit_account, credit_account, amount)
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(uuid(m.id))
        .bind(uuid(m.from))
        .bind(uuid(m.to))
        .bind(amount)
        .execute(&mut *tx)
        .await
        .map_err(store)?
        .rows_affected();
        if inserted == 0 {
            return Ok(RequestOutcome::Exists);
        }
        if !from.get::<bool, _>("may_overdraw") && from.get::<i64, _>("balance") < amount {
            return Ok(RequestOutcome::Refused("exceeds_credits".into()));
        }
        sqlx::query(
            "UPDATE balances SET balance = balance - $2, debits = debits + $2 WHERE id = $1",
        )
        .bind(uuid(m.from))
        .bind(amount)
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        sqlx::query(
            "UPDATE balances SET balance = balance + $2, credits = credits + $2 WHERE id = $1",
        )
        .bind(uuid(m.to))
        .bind(amount)
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)?;
        Ok(RequestOutcome::Created)
    }

    pub async fn balances(&self, ids: &[u128]) -> Result<Vec<Balance>, Unknown> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|&id| uuid(id)).collect();
        let rows = sqlx::query("SELECT id, debits, credits FROM balances WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(store)?;
        Ok(rows
            .iter()
            .map(|r| Balance {
                id: r.get::<uuid::Uuid, _>("id").as_u128(),
                debits: r.get::<i64, _>("debits") as u128,
                credits: r.get::<i64, _>("credits") as u128,
            })
            .collect())
    }

    pub async fn find_transfers(&self, ids: &[u128]) -> Result<Vec<Move>, Unknown> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|&id| uuid(id)).collect();
        let rows = sqlx::query(
            "SELECT id, debit_account, credit_account, amount FROM journal WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(store)?;
        Ok(rows
            .iter()
            .map(|r| Move {
                id: r.get::<uuid::Uuid, _>("id").as_u128(),
                from: r.get::<uuid::Uuid, _>("debit_account").as_u128(),
                to: r.get::<uuid::Uuid, _>("credit_account").as_u128(),
                amount: r.get::<i64, _>("amount") as u64,
            })
            .collect())
    }

    /// Tampering, for the audit's own test: moves money without a journal row.
    pub async fn tamper(&self, account: u128, amount: i64) -> Result<(), Unknown> {
        sqlx::query(
            "UPDATE balances SET balance = balance + $2, credits = credits + $2 WHERE id = $1",
        )
        .bind(uuid(account))
        .bind(amount)
        .execute(&self.pool)
        .await
        .map_err(store)?;
        Ok(())
    }

    /// Drops the run's schema and closes the pool.
    pub async fn close(&self) {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}
