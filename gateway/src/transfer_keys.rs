//! Idempotency of `POST /v1/transfers` with no key store on the path of a transfer that
//! succeeds. The key names the ledger transfer (its id is a hash of user and key) and the
//! request's fingerprint is the transfer's `user_data_128`, so the ledger itself remembers every
//! created transfer, forever, in the same durable commit: a retry finds it (`exists`), and
//! another request with the same key differs from it (`exists_with_different_*`).
//!
//! What the ledger cannot remember is kept here:
//! - requests still running, in memory (one process serves a store): a second request with
//!   the key gets 409;
//! - refusals, which leave no transfer: durably in the key store (scope [`SCOPE`], kept
//!   [`crate::idempotency::KEPT_MS`]) and in memory, loaded again at start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use kizo_persistence::keys::KeyStore;
use kizo_persistence::StoreError;

/// The key store's scope of wallet-transfer refusals; each key is the transfer id.
pub const SCOPE: &str = "wallet-transfers";
/// The most refusals held in memory (the oldest go first; see [`TransferKeys::refusal`]).
pub const REFUSALS_MAX: usize = 1_000_000;
/// The most refusals of one user held at once (a day's): past it, that user's payments are
/// answered `429 too_many_refusals` until the oldest are a day old. Counted from this
/// process's start (refusals loaded from the store carry no user).
pub const REFUSALS_PER_USER: u32 = 1_000;

/// A kept refusal: the fingerprint of the request refused, and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub fingerprint: u128,
    pub status: u16,
    pub body: Bytes,
}

#[derive(Default)]
struct Refusals {
    by_id: HashMap<u128, Refusal>,
    /// (kept at, id, whose), oldest first: what to forget first.
    order: VecDeque<(i64, u128, Option<Arc<str>>)>,
    /// Refusals held per user (those with a known user).
    per_user: HashMap<Arc<str>, u32>,
}

impl Refusals {
    /// Keeps `refusal` for `id`, unless one is kept already: the first stays.
    fn insert(&mut self, at_ms: i64, id: u128, user: Option<&str>, refusal: Refusal) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.by_id.entry(id) {
            entry.insert(refusal);
            let user: Option<Arc<str>> = user.map(Arc::from);
            if let Some(user) = &user {
                *self.per_user.entry(user.clone()).or_default() += 1;
            }
            self.order.push_back((at_ms, id, user));
            self.forget(i64::MIN, REFUSALS_MAX);
        }
    }

    /// Forgets refusals kept before `before_ms`, and the oldest beyond `count_max`.
    fn forget(&mut self, before_ms: i64, count_max: usize) {
        while let Some((at, _, _)) = self.order.front() {
            if *at >= before_ms && self.order.len() <= count_max {
                break;
            }
            let (_, id, user) = self.order.pop_front().expect("a front");
            self.by_id.remove(&id);
            if let Some(user) = user {
                if let std::collections::hash_map::Entry::Occupied(mut count) =
                    self.per_user.entry(user)
                {
                    *count.get_mut() -= 1;
                    if *count.get() == 0 {
                        count.remove();
                    }
                }
            }
        }
        debug_assert_eq!(self.order.len(), self.by_id.len());
    }
}

#[derive(Clone)]
pub struct TransferKeys {
    running: Arc<Mutex<HashSet<u128>>>,
    refusals: Arc<Mutex<Refusals>>,
    store: KeyStore,
    /// Other processes keep refusals in the same store (a cluster's nodes): one not in this
    /// process's memory is looked for there.
    shared: bool,
}

/// Holds a transfer id as running; frees it when dropped (also when the client goes away).
pub struct Running {
    running: Arc<Mutex<HashSet<u128>>>,
    id: u128,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running.lock().expect("not poisoned").remove(&self.id);
    }
}

impl TransferKeys {
    /// Loads the refusals kept in the last [`crate::idempotency::KEPT_MS`].
    pub async fn load(store: KeyStore) -> Result<TransferKeys, StoreError> {
        let kept = store
            .kept(SCOPE, crate::idempotency::KEPT_MS, REFUSALS_MAX as u32)
            .await?;
        let mut refusals = Refusals::default();
        for row in kept {
            let (Ok(id), Ok(fingerprint)) = (
                row.key.parse::<u128>(),
                <[u8; 16]>::try_from(row.fingerprint.as_slice()),
            ) else {
                tracing::warn!(key = row.key, "a kept transfer refusal is damaged; skipped");
                continue;
            };
            refusals.insert(
                row.started_at,
                id,
                None,
                Refusal {
                    fingerprint: u128::from_le_bytes(fingerprint),
                    status: u16::try_from(row.status).unwrap_or(422),
                    body: row.body.into(),
                },
            );
        }
        Ok(TransferKeys {
            running: Arc::default(),
            refusals: Arc::new(Mutex::new(refusals)),
            store,
            shared: false,
        })
    }

    /// Refusals kept by other processes too (a cluster node's): a retry sent to another node
    /// than the first attempt is answered as the first was.
    pub fn shared(mut self) -> TransferKeys {
        self.shared = true;
        self
    }

    /// Marks `id` as running, unless it already is.
    pub fn begin(&self, id: u128) -> Option<Running> {
        let fresh = self.running.lock().expect("not poisoned").insert(id);
        fresh.then(|| Running {
            running: self.running.clone(),
            id,
        })
    }

    /// The refusal kept for `id`, if any. One forgotten (over [`REFUSALS_MAX`] in a day) lets a
    /// retry run again: it is refused again alike, or, for a refusal that burned the id in
    /// the ledger, gets `transfer_failed`.
    pub async fn refusal(&self, id: u128) -> Result<Option<Refusal>, StoreError> {
        let held = self
            .refusals
            .lock()
            .expect("not poisoned")
            .by_id
            .get(&id)
            .cloned();
        if held.is_some() || !self.shared {
            return Ok(held);
        }
        let Some(row) = self
            .store
            .kept_one(SCOPE, &id.to_string(), crate::idempotency::KEPT_MS)
            .await?
        else {
            return Ok(None);
        };
        let Ok(fingerprint) = <[u8; 16]>::try_from(row.fingerprint.as_slice()) else {
            tracing::warn!(key = row.key, "a kept transfer refusal is damaged; skipped");
            return Ok(None);
        };
        Ok(Some(Refusal {
            fingerprint: u128::from_le_bytes(fingerprint),
            status: u16::try_from(row.status).unwrap_or(422),
            body: row.body.into(),
        }))
    }

    /// Refusals of `user_id` held now (the last day's, since this process started).
    pub fn refusals_of(&self, user_id: &str) -> u32 {
        self.refusals
            .lock()
            .expect("not poisoned")
            .per_user
            .get(user_id)
            .copied()
            .unwrap_or(0)
    }

    /// Keeps a refusal of `user_id`'s request, durably first. The first refusal kept for an
    /// id stays.
    pub async fn refuse(
        &self,
        id: u128,
        user_id: &str,
        refusal: Refusal,
    ) -> Result<(), StoreError> {
        self.store
            .keep(
                SCOPE,
                &id.to_string(),
                &refusal.fingerprint.to_le_bytes(),
                refusal.status,
                &refusal.body,
            )
            .await?;
        self.refusals.lock().expect("not poisoned").insert(
            self.store.now_ms(),
            id,
            Some(user_id),
            refusal,
        );
        Ok(())
    }

    /// Forgets refusals past their time.
    pub fn prune(&self) {
        self.refusals.lock().expect("not poisoned").forget(
            self.store.now_ms() - crate::idempotency::KEPT_MS,
            REFUSALS_MAX,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(fingerprint: u128) -> Refusal {
        Refusal {
            fingerprint,
            status: 422,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn refusals_are_forgotten_by_age_and_beyond_the_cap() {
        let mut refusals = Refusals::default();
        for id in 0..10 {
            let user = if id % 2 == 0 { "even" } else { "odd" };
            refusals.insert(100 + id as i64, id, Some(user), refusal(id));
        }
        assert_eq!(refusals.per_user["even"], 5);
        // Inserting an id again keeps the first.
        refusals.insert(500, 3, Some("odd"), refusal(99));
        assert_eq!(refusals.per_user["odd"], 5);
        assert_eq!(refusals.by_id[&3].fingerprint, 3);
        refusals.forget(105, usize::MAX);
        assert_eq!(refusals.order.len(), 5);
        assert!(!refusals.by_id.contains_key(&4) && refusals.by_id.contains_key(&5));
        refusals.forget(i64::MIN, 2);
        let left: Vec<u128> = refusals.order.iter().map(|(_, id, _)| *id).collect();
        assert_eq!(left, [8, 9]);
        // Per-user counts follow what is forgotten.
        assert_eq!(
            (refusals.per_user["even"], refusals.per_user["odd"]),
            (1, 1)
        );
        refusals.forget(i64::MAX, usize::MAX);
        assert!(refusals.per_user.is_empty());
    }
}
