//! Snapshots on disk: random ledgers survive a save and a load exactly, and every kind of
//! damage (a flipped byte, a truncated file, a wrong manifest, an unfinished write) is
//! detected, with the previous snapshot taken instead.

use kizo_engine::local::LocalEngine;
use kizo_engine::round::Operation;
use kizo_engine::{Account, AccountFlags, LedgerImage, Transfer, TransferFlags};
use kizo_snapshots::dir::{snapshot_name, SnapshotDir, SnapshotError};
use kizo_snapshots::format::{part_name, FormatError, MANIFEST};
use proptest::prelude::*;

const SECOND: u64 = 1_000_000_000;

/// A ledger after random work: wallets that cannot go negative, single-phase and pending
/// transfers (some with timeouts, some posted or voided later), refusals and expiries.
fn ledger(seed_ops: &[(u8, u8, u8, u16, u8)], shard_count: usize) -> LocalEngine {
    let mut engine = LocalEngine::new(shard_count);
    let mut now = 1_000 * SECOND;
    let accounts: Vec<Account> = (1..=16u128)
        .map(|id| Account {
            flags: if id > 2 {
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
            } else {
                AccountFlags::empty()
            },
            user_data_64: id as u64 * 7,
            ..Account::new(id << 64 | id, 840, 1)
        })
        .collect();
    engine.execute(vec![Operation::CreateAccounts(accounts)], now);
    let account = |i: u8| ((i % 16) as u128 + 1) << 64 | ((i % 16) as u128 + 1);
    let mut next_id = 1_000u128;
    let mut pending = Vec::new();
    for &(kind, from, to, amount, timeout) in seed_ops {
        now += SECOND * (kind % 3) as u64;
        next_id += 1;
        let mut transfer = Transfer::new(
            next_id,
            account(from),
            account(to),
            amount as u128 + 1,
            840,
            1,
        );
        match kind % 6 {
            0 | 1 => transfer.debit_account_id = account(0), // money in from the bank
            2 => {
                transfer.flags = TransferFlags::PENDING;
                transfer.timeout = (timeout % 4) as u32;
                pending.push(next_id);
            }
            3 | 4 if !pending.is_empty() => {
                let target = pending.remove(timeout as usize % pending.len());
                transfer = Transfer {
                    id: next_id,
                    pending_id: target,
                    flags: if kind % 6 == 3 {
                        TransferFlags::POST_PENDING_TRANSFER
                    } else {
                        TransferFlags::VOID_PENDING_TRANSFER
                    },
                    amount: 0,
                    ..Transfer::default()
                };
                if kind % 6 == 3 {
                    transfer.amount = kizo_engine::POST_WHOLE_PENDING_AMOUNT;
                }
            }
            _ => {}
        }
        if transfer.debit_account_id == transfer.credit_account_id && transfer.pending_id == 0 {
            transfer.credit_account_id = account(to.wrapping_add(1));
        }
        engine.execute(vec![Operation::CreateTransfers(vec![transfer])], now);
        if kind % 5 == 0 {
            engine.execute(vec![Operation::Expire], now);
        }
    }
    engine
}

fn image_of(ops: &[(u8, u8, u8, u16, u8)]) -> LedgerImage {
    ledger(ops, 3).image()
}

fn some_ops(n: usize) -> Vec<(u8, u8, u8, u16, u8)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let b = (state >> 16).to_le_bytes();
            (
                b[0],
                b[1],
                b[2],
                u16::from_le_bytes([b[3], b[4]]) % 5000,
                b[5],
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the ledger and however many parts, a saved snapshot loads as the same image.
    #[test]
    fn random_ledgers_survive_save_and_load_exactly(
        ops in prop::collection::vec(any::<(u8, u8, u8, u16, u8)>(), 0..120),
        parts in 1..5u32,
    ) {
        let original = ledger(&ops, 3);
        let image = original.image();
        prop_assert_eq!(image.check(), Ok(()));
        let folder = tempfile::tempdir().unwrap();
        let dir = kizo_snapshots::dir::open(folder.path());
        let manifest = dir.write(&image, parts, "2026-11-25T00:00:00Z").unwrap();
        prop_assert_eq!(manifest.accounts, image.accounts.len() as u64);
        let (read, loaded) = dir.load(&snapshot_name(image.lsn)).unwrap();
        prop_assert_eq!(read, manifest);
        prop_assert_eq!(&loaded, &image);
        // And a ledger restarted from it with another shard count holds the same state.
        let engine = LocalEngine::recover_from(parts as usize + 1, Some(&loaded), original.commits());
        prop_assert_eq!(engine.image(), image);
    }
}

/// Two snapshots (the second the newer), in a fresh folder.
fn two_snapshots() -> (tempfile::TempDir, SnapshotDir, LedgerImage, LedgerImage) {
    let folder = tempfile::tempdir().unwrap();
    let dir = kizo_snapshots::dir::open(folder.path());
    let older = image_of(&some_ops(60));
    let newer = image_of(&some_ops(200));
    assert!(older.lsn < newer.lsn);
    let expired = newer
        .pending
        .iter()
        .filter(|p| p.1 == kizo_engine::PendingStatus::Expired);
    let expired = expired.count();
    assert!(
        newer.transfers.len() > 100 && expired > 0,
        "{} transfers, {expired} expired",
        newer.transfers.len()
    );
    assert!(newer
        .pending
        .iter()
        .any(|p| p.1 == kizo_engine::PendingStatus::Posted));
    dir.write(&older, 2, "2026-11-25T00:00:00Z").unwrap();
    dir.write(&newer, 2, "2026-11-25T00:01:00Z").unwrap();
    (folder, dir, older, newer)
}

fn assert_checksum_error(error: &SnapshotError) {
    assert!(
        matches!(
            error,
            SnapshotError::Format {
                source: FormatError::Checksum { .. },
                ..
            }
        ),
        "{error}"
    );
}

/// The newest valid snapshot, asserting that exactly the newer one was passed over.
fn newest_after_damage(dir: &SnapshotDir, older: &LedgerImage) -> SnapshotError {
    let (found, mut skipped) = dir.newest_valid(|_| Ok(())).unwrap();
    let (_, image) = found.expect("the older snapshot still loads");
    assert_eq!(&image, older);
    assert_eq!(skipped.len(), 1);
    skipped.pop().unwrap().error
}

#[test]
fn a_flipped_byte_anywhere_in_a_part_is_detected() {
    let (_folder, dir, older, newer) = two_snapshots();
    let part = dir.path_of(&snapshot_name(newer.lsn)).join(part_name(1));
    let original = std::fs::read(&part).unwrap();
    for at in [
        0,
        original.len() / 3,
        original.len() / 2,
        original.len() - 1,
    ] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&part, &bytes).unwrap();
        let error = newest_after_damage(&dir, &older);
        assert_checksum_error(&error);
    }
}

#[test]
fn a_truncated_part_is_detected() {
    let (_folder, dir, older, newer) = two_snapshots();
    let part = dir.path_of(&snapshot_name(newer.lsn)).join(part_name(0));
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() - 100]).unwrap();
    let error = newest_after_damage(&dir, &older);
    assert!(
        matches!(
            error,
            SnapshotError::Format {
                source: FormatError::Length { .. },
                ..
            }
        ),
        "{error}"
    );
}

/// Edits the newer snapshot's manifest with `edit`.
fn edit_manifest(dir: &SnapshotDir, lsn: u64, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.path_of(&snapshot_name(lsn)).join(MANIFEST);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[test]
fn a_wrong_manifest_is_detected() {
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 7] = [
        ("another LSN", |m| {
            m["lsn"] = (m["lsn"].as_u64().unwrap() - 1).into()
        }),
        ("another timestamp", |m| m["timestamp_max"] = 1.into()),
        ("a wrong count", |m| m["accounts"] = 3.into()),
        ("a newer version", |m| m["format_version"] = 3.into()),
        ("a missing file", |m| {
            m["files"].as_array_mut().unwrap().pop();
        }),
        ("an unknown field", |m| m["compressed"] = true.into()),
        ("another shard count", |m| m["shard_count"] = 1.into()),
    ];
    for (what, edit) in edits {
        let (_folder, dir, older, newer) = two_snapshots();
        edit_manifest(&dir, newer.lsn, edit);
        let error = newest_after_damage(&dir, &older);
        assert!(
            matches!(error, SnapshotError::Format { .. }),
            "{what}: {error}"
        );
    }
    // A manifest that is not JSON at all.
    let (_folder, dir, older, newer) = two_snapshots();
    let path = dir.path_of(&snapshot_name(newer.lsn)).join(MANIFEST);
    std::fs::write(&path, b"{\"format\": \"kizo-snap").unwrap();
    newest_after_damage(&dir, &older);
}

#[test]
fn a_consistent_file_with_a_wrong_balance_fails_the_ledger_check() {
    let (_folder, dir, older, newer) = two_snapshots();
    // Rewrite the newer snapshot from a tampered image: checksums and manifest all agree.
    let mut tampered = newer.clone();
    tampered.accounts[3].credits_posted += 1;
    dir.write(&tampered, 2, "2026-11-25T00:02:00Z").unwrap();
    let error = newest_after_damage(&dir, &older);
    assert!(matches!(error, SnapshotError::Invalid { .. }), "{error}");
}

#[test]
fn an_unfinished_write_is_never_read_and_is_removed_at_start() {
    let (_folder, dir, older, newer) = two_snapshots();
    // What a crash before the rename leaves: a temporary folder with some parts.
    let unfinished = dir.path_of("tmp-00000000000000099999-1-0");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(unfinished.join(part_name(0)), b"half a part").unwrap();
    // And a snapshot folder whose manifest never made it (a lost rename would look so).
    std::fs::remove_file(dir.path_of(&snapshot_name(newer.lsn)).join(MANIFEST)).unwrap();
    let listed = dir.list().unwrap();
    assert_eq!(listed.len(), 2);
    newest_after_damage(&dir, &older);
    assert_eq!(dir.remove_unfinished().unwrap().len(), 1);
    assert!(!unfinished.exists());
}

#[test]
fn pruning_keeps_the_newest_readable_snapshots() {
    let folder = tempfile::tempdir().unwrap();
    let dir = kizo_snapshots::dir::open(folder.path());
    let mut lsns = Vec::new();
    for n in [20, 40, 60, 80] {
        let image = image_of(&some_ops(n));
        lsns.push(image.lsn);
        dir.write(&image, 1, "2026-11-25T00:00:00Z").unwrap();
    }
    let removed = dir.prune(2).unwrap();
    assert_eq!(
        removed,
        vec![snapshot_name(lsns[1]), snapshot_name(lsns[0])]
    );
    let left: Vec<u64> = dir.list().unwrap().iter().map(|l| l.lsn).collect();
    assert_eq!(left, lsns[2..]);
}

#[test]
fn writing_the_same_lsn_again_replaces_the_snapshot() {
    let folder = tempfile::tempdir().unwrap();
    let dir = kizo_snapshots::dir::open(folder.path());
    let image = image_of(&some_ops(50));
    dir.write(&image, 3, "2026-11-25T00:00:00Z").unwrap();
    let again = dir.write(&image, 1, "2026-11-25T00:05:00Z").unwrap();
    assert_eq!(again.shard_count, 1);
    let (manifest, loaded) = dir.load(&snapshot_name(image.lsn)).unwrap();
    assert_eq!((manifest, loaded), (again, image));
    assert_eq!(dir.list().unwrap().len(), 1);
}

/// Parts of a megabyte and more are mapped instead of read: a large ledger loads back exactly
/// from its mapped parts, and a flipped byte in one is caught by its checksum all the same.
#[test]
fn large_parts_are_mapped_and_checked() {
    use kizo_snapshots::dir::{Disk, PartBytes, MAP_FROM_BYTES};
    let folder = tempfile::tempdir().unwrap();
    let dir = kizo_snapshots::dir::open(folder.path());
    let mut image = LedgerImage {
        lsn: 7,
        timestamp_max: 30_000,
        ..LedgerImage::default()
    };
    image.accounts = (1..=20_000u128)
        .map(|i| Account {
            timestamp: i as u64,
            ..Account::new(i * 0x9e37_79b9_7f4a_7c15, 840, 1)
        })
        .collect();
    image.canonicalize();
    dir.write(&image, 2, "2026-12-02T00:00:00Z").unwrap();
    let folder_of = dir.path_of(&snapshot_name(image.lsn));
    for part in 0..2 {
        let path = folder_of.join(part_name(part));
        assert!(std::fs::metadata(&path).unwrap().len() >= MAP_FROM_BYTES);
        let read = kizo_snapshots::RealDisk.read_part(&path, u64::MAX).unwrap();
        assert!(matches!(read, PartBytes::Mapped(_)));
        assert_eq!(&*read, &std::fs::read(&path).unwrap()[..]);
    }
    let (_, loaded) = dir.load(&snapshot_name(image.lsn)).unwrap();
    assert_eq!(loaded, image);
    let path = folder_of.join(part_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let error = dir.load(&snapshot_name(image.lsn)).unwrap_err();
    assert_checksum_error(&error);
}

/// A snapshot the version 1 code wrote (every transfer, no filters), kept in the repository:
/// it still loads as the same ledger, and shards with a window start from it (building their
/// filters from its transfers), finding every transfer, in memory or in the store.
#[test]
fn a_version_1_snapshot_still_loads() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let dir = kizo_snapshots::dir::open(&fixtures);
    let name = snapshot_name(81);
    let (manifest, loaded) = dir.load(&name).unwrap();
    assert_eq!((manifest.format_version, manifest.filters), (1, 0));
    assert!(loaded.is_complete());
    assert_eq!(loaded.check(), Ok(()));
    let original = ledger(&some_ops(80), 3);
    assert_eq!(loaded, original.image());
    let commits = original.commits();
    let engine =
        LocalEngine::recover_with_window(2, 4, Some(&loaded), commits, commits.len() as u64);
    assert_eq!(engine.all_accounts(), original.all_accounts());
    assert!(engine.window_len() < loaded.transfers.len() + loaded.failed.len());
    for transfer in &loaded.transfers {
        assert_eq!(
            engine.held_transfer(transfer.id),
            original.held_transfer(transfer.id)
        );
    }
    let windowed = engine.image();
    assert_eq!(windowed.filters.len(), 2);
    assert_eq!(windowed.check(), Ok(()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Shards with a window save what they hold and their filters; loaded with another shard
    /// count, the ledger is the same and every transfer is found.
    #[test]
    fn windowed_ledgers_survive_save_and_load(
        ops in prop::collection::vec(any::<(u8, u8, u8, u16, u8)>(), 0..120),
        parts in 1..5u32,
        window in 1..20usize,
    ) {
        let original = ledger(&ops, 3);
        let commits = original.commits();
        let last = commits.len() as u64;
        let windowed = LocalEngine::recover_with_window(3, window, None, commits, last);
        let image = windowed.image();
        prop_assert_eq!(image.filters.len(), 3);
        prop_assert_eq!(image.check(), Ok(()));
        let folder = tempfile::tempdir().unwrap();
        let dir = kizo_snapshots::dir::open(folder.path());
        let manifest = dir.write(&image, parts, "2026-12-05T00:00:00Z").unwrap();
        prop_assert_eq!(manifest.filters, 3);
        let (_, loaded) = dir.load(&snapshot_name(image.lsn)).unwrap();
        prop_assert_eq!(&loaded, &image);
        let shards = parts as usize + 1;
        let engine = LocalEngine::recover_with_window(shards, window, Some(&loaded), commits, last);
        prop_assert_eq!(engine.all_accounts(), original.all_accounts());
        for id in 1_000..1_000 + ops.len() as u128 + 2 {
            prop_assert_eq!(engine.held_transfer(id), original.held_transfer(id));
        }
    }
}
