//! Every id the wallet derives. Each is stored (in the ledger, the users' table, the
//! settlements' table), so each derivation is written down exactly and must never change:
//! the tests pin known values.

use sha2::{Digest, Sha256};

use kizo_settlement::Kind;

/// The first 16 bytes of a SHA-256 digest, little-endian, kept off 0 and `u128::MAX` (which are
/// not ids).
fn id_of(digest: &[u8]) -> u128 {
    let id = u128::from_le_bytes(digest[..16].try_into().expect("a digest has 16 bytes"));
    id.clamp(1, u128::MAX - 1)
}

/// The wallet account of the user who signs up with `email` (trimmed and lowercased):
/// `SHA-256(wallet_key ‖ email)`, first 16 bytes little-endian, clamped to `1..=u128::MAX-1`.
/// Keyed with the server's secret so that nobody can tell an email's wallet id from the email.
pub fn wallet_id(wallet_key: &[u8; 32], email: &str) -> u128 {
    id_of(
        &Sha256::new()
            .chain_update(wallet_key)
            .chain_update(email.as_bytes())
            .finalize(),
    )
}

/// The payment an Idempotency-Key stands for: `SHA-256(user_id ‖ "\\0" ‖ key)` (the two
/// characters backslash and zero, not a NUL byte), first 16 bytes little-endian, clamped. The
/// same key always names the same transfer, so a retry whose answer was lost cannot move money
/// twice.
pub fn transfer_id(user_id: &str, key: &str) -> u128 {
    id_of(&Sha256::digest(format!("{user_id}\\0{key}").as_bytes()))
}

/// The settlement an Idempotency-Key stands for: [`transfer_id`] of the key prefixed with the
/// kind's code and a NUL byte (`"deposit\0<key>"`), so the same key names one deposit and one
/// withdrawal, never a payment.
pub fn settlement_id(user_id: &str, kind: Kind, key: &str) -> u128 {
    transfer_id(user_id, &format!("{}\0{key}", kind.code()))
}

/// The system account that stands for money at the bank, one per ledger: the ASCII of
/// "kizobank" in the high 64 bits and the ledger below; readable in a dump, never a hash of
/// user input. On a cluster, partition 0's ([`bank_account_id_in`]).
pub fn bank_account_id(ledger: u32) -> u128 {
    bank_account_id_in(ledger, 0)
}

const BANK_ACCOUNT_PREFIX: u128 = 0x6b69_7a6f_6261_6e6b;

/// A cluster's bank account of `ledger` in `partition`, which settles the wallets of that
/// partition, so that a settlement's transfers never cross partitions: the partition in bits
/// 32 to 63 (partition 0's is the single node's).
pub fn bank_account_id_in(ledger: u32, partition: u32) -> u128 {
    (BANK_ACCOUNT_PREFIX << 64) | (u128::from(partition) << 32) | u128::from(ledger)
}

/// The partition and ledger a bank account names, if `account` is one.
pub fn bank_account_of(account: u128) -> Option<(u32, u32)> {
    (account >> 64 == BANK_ACCOUNT_PREFIX).then_some(((account >> 32) as u32, account as u32))
}

/// Who receives a payment, as the request names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payee {
    Account(u128),
    /// Trimmed and lowercased.
    Email(String),
}

/// The fingerprint of a payment request, kept as the transfer's `user_data_128`: the same key
/// with another request is told apart by it. SHA-256 over `"kizo wallet transfer v1\0"`, the
/// sender (16 bytes LE), `"a"` and the account (16 bytes LE) or `"e"`, the email's length
/// (8 bytes LE) and the email, the amount (8 bytes LE), then `"n"` and the note or `"-"`; its
/// first 16 bytes little-endian (not clamped).
pub fn fingerprint(from: u128, to: &Payee, amount: u64, note: Option<&str>) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(b"kizo wallet transfer v1\0");
    hasher.update(from.to_le_bytes());
    match to {
        Payee::Account(id) => {
            hasher.update(b"a");
            hasher.update(id.to_le_bytes());
        }
        Payee::Email(email) => {
            hasher.update(b"e");
            hasher.update((email.len() as u64).to_le_bytes());
            hasher.update(email.as_bytes());
        }
    }
    hasher.update(amount.to_le_bytes());
    match note {
        Some(note) => {
            hasher.update(b"n");
            hasher.update(note.as_bytes());
        }
        None => hasher.update(b"-"),
    }
    u128::from_le_bytes(
        hasher.finalize()[..16]
            .try_into()
            .expect("a digest has 16 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values (computed apart, with Python's hashlib): stored ids never change.
    #[test]
    fn derivations_are_pinned() {
        assert_eq!(
            bank_account_id(840),
            0x6b69_7a6f_6261_6e6b_0000_0000_0000_0348
        );
        assert_eq!(
            bank_account_id_in(840, 7),
            0x6b69_7a6f_6261_6e6b_0000_0007_0000_0348
        );
        assert_eq!(bank_account_of(bank_account_id_in(840, 7)), Some((7, 840)));
        assert_eq!(bank_account_of(12345), None);
        let key = [7u8; 32];
        assert_eq!(
            wallet_id(&key, "ana@example.com"),
            id_of(&Sha256::digest([&key[..], b"ana@example.com"].concat()))
        );
        assert_eq!(transfer_id("u1", "k1"), id_of(&Sha256::digest(b"u1\\0k1")));
        assert_eq!(
            settlement_id("u1", Kind::Withdrawal, "k1"),
            id_of(&Sha256::digest(b"u1\\0withdrawal\0k1"))
        );
        assert_eq!(transfer_id("u1", "k1"), PINNED_TRANSFER_ID);
        assert_eq!(
            fingerprint(1, &Payee::Email("b@c.d".into()), 5, None),
            PINNED_FINGERPRINT
        );
    }

    const PINNED_TRANSFER_ID: u128 = 0x170e_de07_592e_f9b5_c026_a33d_122b_fe98;
    const PINNED_FINGERPRINT: u128 = 0x59ff_42be_8b04_9794_718e_caf6_e59b_5358;
}
