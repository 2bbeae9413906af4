//! Kizo's gateway over HTTP, through `kizo-client`: the batch ledger API (an API key) and the
//! wallet API (users, sessions, payments with kept Idempotency-Keys).

use std::sync::Arc;
use std::time::Duration;

use kizo_client::{Client, Error, Payment, Recipient, Retry, Session, Signup};
use kizo_engine::{CreateAccountResult, CreateTransferResult, Transfer};

use crate::target::{Balance, Move, RequestOutcome, Unknown, CODE, LEDGER};

/// How long one request may take before it counts as `timeout` (its outcome unknown).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How the ledger API's transfers travel (`--wire`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// JSON, decimal strings for big numbers.
    #[default]
    Json,
    /// The binary format's 128-byte records (docs/binary.md).
    Binary,
}

#[derive(Clone)]
pub struct Http {
    /// Setup and audit: retried where the client library finds it safe.
    setup: Client,
    /// The measured requests: one attempt each, so that a failure is counted as it happened
    /// (what an unknown outcome did, the audit finds out).
    measured: Client,
}

/// A client library's failure as an unknown outcome, named by the problem's status or the
/// kind of failure; the detail is the problem's code.
fn unknown(error: Error) -> Unknown {
    let code = match &error {
        Error::Problem { status, .. } => format!("http_{status}"),
        Error::Timeout(_) => "timeout".into(),
        Error::Transport(why) if why.starts_with("connect:") => "connect".into(),
        Error::Transport(_) => "transport".into(),
        Error::Decode(_) => "protocol".into(),
        Error::Invalid(_) => "args".into(),
    };
    Unknown::new(code, error.code().unwrap_or(&error.to_string()))
}

/// A logged-in wallet user.
#[derive(Clone)]
pub struct WalletUser {
    pub email: String,
    pub session: Arc<Session>,
    /// The wallet's id as the API shows it (a UUID).
    pub wallet: String,
}

pub const PASSWORD: &str = "load generator password";

pub fn ledger_id(wallet: &str) -> u128 {
    uuid::Uuid::parse_str(wallet).map_or(0, |u| u.as_u128())
}

impl Http {
    /// A client of the gateway at `base` (`http://HOST:PORT`); refused when `base` is not
    /// such a URL or the API key cannot be sent as a header.
    pub fn new(base: &str, api_key: &str, wire: Wire) -> Result<Http, Unknown> {
        let client = |retry: Retry| {
            Client::builder(base)
                .api_key(api_key)
                .wire(match wire {
                    Wire::Json => kizo_client::Wire::Json,
                    Wire::Binary => kizo_client::Wire::Binary,
                })
                .timeout(REQUEST_TIMEOUT)
                .retry(retry)
                .build()
                .map_err(|e| Unknown::new("args", format!("--target {base}: {e}")))
        };
        Ok(Http {
            setup: client(Retry::default())?,
            measured: client(Retry {
                attempts: 1,
                ..Retry::default()
            })?,
        })
    }

    pub async fn create_accounts(&self, system: u128, wallets: &[u128]) -> Result<(), Unknown> {
        let mut accounts = vec![kizo_engine::Account::new(system, LEDGER, CODE)];
        accounts.extend(wallets.iter().map(|id| kizo_engine::Account {
            flags: kizo_engine::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..kizo_engine::Account::new(*id, LEDGER, CODE)
        }));
        for chunk in accounts.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            let results = self.setup.create_accounts(chunk).await.map_err(unknown)?;
            if let Some(bad) = results.iter().find(|r| {
                !matches!(
                    r,
                    CreateAccountResult::Created | CreateAccountResult::Exists
                )
            }) {
                return Err(Unknown::new("setup", format!("an account: {bad}")));
            }
        }
        Ok(())
    }

    /// Creates transfers (at most 8189), once: one outcome each, in order.
    pub async fn transfers(&self, moves: &[Move]) -> Result<Vec<RequestOutcome>, Unknown> {
        let transfers: Vec<Transfer> = moves
            .iter()
            .map(|m| Transfer::new(m.id, m.from, m.to, u128::from(m.amount), LEDGER, CODE))
            .collect();
        let results = self
            .measured
            .create_transfers(&transfers)
            .await
            .map_err(unknown)?;
        Ok(results
            .iter()
            .map(|r| match r {
                CreateTransferResult::Created => RequestOutcome::Created,
                CreateTransferResult::Exists => RequestOutcome::Exists,
                other => RequestOutcome::Refused(other.code().to_string()),
            })
            .collect())
    }

    pub async fn balances(&self, ids: &[u128]) -> Result<Vec<Balance>, Unknown> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            let accounts = self.setup.lookup_accounts(chunk).await.map_err(unknown)?;
            found.extend(accounts.iter().map(|a| Balance {
                id: a.id,
                debits: a.debits_posted,
                credits: a.credits_posted,
            }));
        }
        Ok(found)
    }

    pub async fn find_transfers(&self, ids: &[u128]) -> Result<Vec<Move>, Unknown> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(kizo_engine::BATCH_EVENTS_MAX) {
            let transfers = self.setup.lookup_transfers(chunk).await.map_err(unknown)?;
            found.extend(transfers.iter().map(|t| Move {
                id: t.id,
                from: t.debit_account_id,
                to: t.credit_account_id,
                amount: u64::try_from(t.amount).unwrap_or(u64::MAX),
            }));
        }
        Ok(found)
    }

    /// Signs up (or, if the email is taken, logs in) and returns the user.
    pub async fn sign_up_or_in(&self, email: &str) -> Result<WalletUser, Unknown> {
        let signup = Signup {
            email: email.into(),
            password: PASSWORD.into(),
            first_name: "Load".into(),
            last_name: "Generator".into(),
        };
        match self.setup.signup(&signup).await {
            Ok(_) | Err(Error::Problem { status: 409, .. }) => {}
            Err(error) => return Err(unknown(error)),
        }
        self.login(email).await
    }

    /// Signs in and reads the user's wallet (the `login` request of `login-storm`).
    pub async fn login(&self, email: &str) -> Result<WalletUser, Unknown> {
        let session = self
            .measured
            .login(email, PASSWORD)
            .await
            .map_err(unknown)?;
        let me = session.me().await.map_err(unknown)?;
        let wallet = me
            .accounts
            .first()
            .ok_or_else(|| Unknown::new("protocol", "a user without a wallet"))?
            .id
            .clone();
        Ok(WalletUser {
            email: email.to_string(),
            session: Arc::new(session),
            wallet,
        })
    }

    /// `GET /v1/dashboard`.
    pub async fn dashboard(&self, user: &WalletUser) -> Result<(), Unknown> {
        user.session.dashboard().await.map(drop).map_err(unknown)
    }

    /// The first page (20) of the user's history.
    pub async fn history(&self, user: &WalletUser) -> Result<(), Unknown> {
        user.session
            .history(&user.wallet, 20, None)
            .await
            .map(drop)
            .map_err(unknown)
    }

    /// A payment to `to_wallet`; the ledger id of the transfer when created. A refusal is an
    /// outcome; a failure whose outcome is unknown (a 5xx, a timeout, a key still in use) is not.
    pub async fn wallet_transfer(
        &self,
        user: &WalletUser,
        to_wallet: &str,
        amount: u64,
    ) -> Result<(RequestOutcome, u128), Unknown> {
        let payment = Payment {
            from_account_id: user.wallet.clone(),
            to: Recipient::AccountId(to_wallet.to_string()),
            amount,
            note: None,
        };
        match user.session.pay(&payment).await {
            Ok(transfer) if transfer.status == "posted" => {
                Ok((RequestOutcome::Created, ledger_id(&transfer.id)))
            }
            // Held for review: not money moved yet.
            Ok(transfer) => Ok((RequestOutcome::Refused(transfer.status), 0)),
            Err(Error::Problem { status, code, .. })
                if status < 500 && code != "idempotency_key_in_use" =>
            {
                Ok((RequestOutcome::Refused(code), 0))
            }
            Err(error) => Err(unknown(error)),
        }
    }
}
