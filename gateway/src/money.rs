//! Deposits and withdrawals as the wallet starts them: the settlement is written (its id is the
//! Idempotency-Key's, so a retry finds it), a withdrawal's hold is placed before the answer,
//! and the settlement is handed to the supervisor. No HTTP here: the handlers in
//! [`crate::settlements`] parse, authenticate, call [`start_settlement`] and map its answer.

use kizo_engine::settlement::{Kind, Phase, Settlement};
use kizo_engine::settlement_actors::{self, BACKLOG_MAX};
use kizo_persistence::settlements::Created;
use kizo_persistence::StoreError;

use crate::server::App;

/// A request for money in or out, already checked and authorized.
pub struct SettlementRequest<'a> {
    pub user_id: &'a str,
    /// The caller's own wallet.
    pub account: u128,
    pub kind: Kind,
    /// Within `1..=kizo_wallet::AMOUNT_MAX`.
    pub amount: u64,
    pub key: &'a str,
}

/// What became of a request.
pub enum Started {
    /// A new settlement, as it stands now (a withdrawal's hold placed, unless the ledger was out
    /// of reach: then the supervisor places it).
    New(Settlement),
    /// The key named this settlement before, for the same request: it again.
    Replayed(Settlement),
    /// A request with the same key is running right now.
    InUse,
}

/// Settlements one user may have under way at once (pending or processing) by default: one
/// user cannot fill the supervisor's backlog (`BACKLOG_MAX`) for everyone.
pub const SETTLEMENTS_UNFINISHED_PER_USER: u32 = 16;
/// The most `--settlements-per-user` may be.
pub const SETTLEMENTS_UNFINISHED_PER_USER_MAX: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SettlementRequestError {
    /// The user has as many settlements under way as they may.
    #[error("you have {0} deposits and withdrawals under way; retry when one has finished")]
    UserQuota(u32),
    /// The supervisor holds as many unfinished settlements as it may.
    #[error("too many settlements under way")]
    Busy,
    /// The key named another request (another kind, account or amount, or another user).
    #[error("the Idempotency-Key was used for another request")]
    KeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn start_settlement(
    state: &App,
    money: &crate::server::Money,
    request: SettlementRequest<'_>,
) -> Result<Started, SettlementRequestError> {
    if money.settlements.backlog() >= BACKLOG_MAX {
        return Err(SettlementRequestError::Busy);
    }
    let id = kizo_wallet::ids::settlement_id(request.user_id, request.kind, request.key);
    let Some(_running) = state.transfer_keys.begin(id) else {
        return Ok(Started::InUse);
    };
    let ledger = state.currency.ledger;
    let fresh = Settlement::new(
        id,
        request.kind,
        request.account,
        // Its partition's (on one node, the one): a settlement never crosses partitions.
        kizo_wallet::ids::bank_account_id_in(ledger, state.books.home_of(request.account)),
        ledger,
        request.amount,
        state.clock.now_ms(),
    );
    match money
        .store
        .create(request.user_id, &fresh, money.unfinished_per_user)
        .await?
    {
        Created::Created => {}
        Created::OverQuota => {
            return Err(SettlementRequestError::UserQuota(money.unfinished_per_user))
        }
        Created::Exists(existing) => {
            let same = existing.user_id == request.user_id
                && existing.settlement.kind == request.kind
                && existing.settlement.account_id == request.account
                && existing.settlement.amount == request.amount;
            if !same {
                return Err(SettlementRequestError::KeyReused);
            }
            // A first request that stopped before its hold is finished by the supervisor.
            if existing.settlement.phase == Phase::Hold {
                money.settlements.submit(existing.settlement.clone());
            }
            return Ok(Started::Replayed(existing.settlement));
        }
    }
    let settlement = match request.kind {
        Kind::Deposit => fresh,
        // The hold comes before the answer, so the answer tells the truth about the balance.
        Kind::Withdrawal => {
            match settlement_actors::advance(&money.ports, &money.policy, &fresh).await {
                Ok((held, _)) => held,
                Err(error) => {
                    tracing::warn!(%error, "a withdrawal's hold was not recorded; the supervisor takes it over");
                    fresh
                }
            }
        }
    };
    if !matches!(settlement.phase, Phase::Done(_)) {
        money.settlements.submit(settlement.clone());
    }
    Ok(Started::New(settlement))
}
