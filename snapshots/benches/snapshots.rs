//! Snapshot write and load speed, and the start of an engine from a snapshot.
//!
//! `cargo bench -p kizo-snapshots --bench snapshots -- --accounts 1000000 --transfers 1000000`
//! builds a ledger image of that size (every account funded, transfers between them), writes
//! it as a snapshot into a temporary folder, loads it back (read, checksums, decoding, the
//! structure check), then rebuilds the engine's shards from it (which derives and compares
//! every balance), and prints each step's time and throughput.

use std::time::Instant;

use kizo_engine::shard::ShardState;
use kizo_engine::{Account, AccountFlags, LedgerImage, Transfer};
use kizo_snapshots::dir::snapshot_name;

// The allocator the gateway runs with, so that the start-up measured is the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// A ledger of `accounts` wallets funded by one bank account, then `transfers` payments
/// between wallets, as the engine would have stored them.
fn ledger(accounts: u64, transfers: u64) -> LedgerImage {
    let id = |i: u64| u128::from(i + 1) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835 % u128::MAX;
    let mut image = LedgerImage {
        lsn: 1_000,
        ..LedgerImage::default()
    };
    let mut timestamp = 1_000_000_000u64;
    let mut wallets: Vec<Account> = (1..=accounts)
        .map(|i| {
            timestamp += 1;
            Account {
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                timestamp,
                ..Account::new(id(i), 840, 1)
            }
        })
        .collect();
    timestamp += 1;
    let mut bank = Account {
        timestamp,
        ..Account::new(id(0), 840, 2)
    };
    let mut next = 1u128 << 100;
    let mut transfer = |debit: &mut Account, credit: &mut Account, amount: u128, ts: &mut u64| {
        *ts += 1;
        next += 1;
        debit.debits_posted += amount;
        credit.credits_posted += amount;
        Transfer {
            timestamp: *ts,
            ..Transfer::new(next, debit.id, credit.id, amount, 840, 1)
        }
    };
    let funding = transfers.min(accounts) as usize;
    for wallet in wallets.iter_mut().take(funding) {
        let t = transfer(&mut bank, wallet, 1_000_000, &mut timestamp);
        image.transfers.push(t);
    }
    let mut state = 7u64;
    for _ in funding as u64..transfers {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let from = (state >> 33) as usize % funding.max(1);
        let to = (from + 1 + (state >> 13) as usize % 97) % funding.max(1);
        if from == to {
            continue;
        }
        let (a, b) = if from < to {
            let (left, right) = wallets.split_at_mut(to);
            (&mut left[from], &mut right[0])
        } else {
            let (left, right) = wallets.split_at_mut(from);
            (&mut right[0], &mut left[to])
        };
        let t = transfer(a, b, 1, &mut timestamp);
        image.transfers.push(t);
    }
    wallets.push(bank);
    image.accounts = wallets;
    image.timestamp_max = timestamp;
    image.canonicalize();
    image
}

fn main() {
    let accounts = arg("--accounts", 1_000_000);
    let transfers = arg("--transfers", accounts);
    let shards = arg("--shards", 2) as usize;
    let parts = arg("--parts", 2) as u32;
    let started = Instant::now();
    let image = ledger(accounts, transfers);
    println!(
        "built a ledger of {} accounts and {} transfers in {:.2} s",
        image.accounts.len(),
        image.transfers.len(),
        started.elapsed().as_secs_f64()
    );
    let folder =
        tempfile::tempdir_in(std::env::var("KIZO_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .expect("a temporary folder");
    let dir = kizo_snapshots::dir::open(folder.path());
    let started = Instant::now();
    let manifest = dir
        .write(&image, parts, "2026-11-25T00:00:00Z")
        .expect("written");
    let write = started.elapsed().as_secs_f64();
    let gb = manifest.bytes as f64 / 1e9;
    println!(
        "write: {:.2} GB in {write:.2} s = {:.2} GB/s (encode, fsync, rename)",
        gb,
        gb / write
    );
    let started = Instant::now();
    let (_, loaded) = dir.load(&snapshot_name(image.lsn)).expect("loaded");
    let load = started.elapsed().as_secs_f64();
    println!(
        "load: {:.2} GB in {load:.2} s = {:.2} GB/s (read, checksums, decode, structure check)",
        gb,
        gb / load
    );
    assert_eq!(loaded, image);
    drop(image);
    // Where the load's time goes.
    let folder_of = dir.path_of(&snapshot_name(loaded.lsn));
    let t = Instant::now();
    let manifest = dir.manifest(&snapshot_name(loaded.lsn)).unwrap();
    let bytes: Vec<_> = manifest
        .files
        .iter()
        .map(|f| {
            use kizo_snapshots::dir::Disk;
            kizo_snapshots::RealDisk
                .read_part(&folder_of.join(&f.name), u64::MAX)
                .unwrap()
        })
        .collect();
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for b in &bytes {
        crc32fast::hash(b);
    }
    let crc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let decoded = kizo_snapshots::format::decode(&manifest, &bytes).unwrap();
    let decode = t.elapsed().as_secs_f64();
    let t = Instant::now();
    decoded.check_structure().unwrap();
    let check = t.elapsed().as_secs_f64();
    println!("  of which: read (mapped) {read:.2} s, checksums {crc:.2} s (one thread), decode (with checksums, parallel) {decode:.2} s, structure check {check:.2} s");
    let started = Instant::now();
    let built: Vec<ShardState> = std::thread::scope(|scope| {
        let loaded = &loaded;
        let workers: Vec<_> = (0..shards)
            .map(|i| scope.spawn(move || ShardState::from_image(i, shards, None, loaded)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap().expect("the image adds up"))
            .collect()
    });
    let rebuild = started.elapsed().as_secs_f64();
    println!(
        "shards: {shards} rebuilt from the image (every balance derived and compared) in \
         {rebuild:.2} s; start-up from the snapshot (load + rebuild) {:.2} s",
        load + rebuild
    );
    assert_eq!(
        built.iter().map(|s| s.accounts().count()).sum::<usize>(),
        loaded.accounts.len()
    );
}
