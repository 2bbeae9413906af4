//! The snapshot format, in memory: a [`LedgerImage`] split by id hash into parts, each part an
//! `rkyv` archive, described by a JSON [`Manifest`] with each file's length and CRC-32. Pure:
//! bytes in, bytes out; [`crate::dir`] puts them on a disk.
//!
//! Every part repeats the manifest's LSN, timestamp, part index and count, so a manifest that
//! does not belong to its files is caught even when every checksum matches.
//!
//! Version 2 adds the shards' id filters, in one more file (`filters.rkyv`) after the parts,
//! when the image has them (shards with a window); the parts are laid out as in version 1,
//! so a version 1 snapshot (every transfer, no filters) still loads.

use kizo_ledger::filter::{Generation, IdFilter};
use kizo_ledger::{
    Account, AccountFlags, CreateTransferResult, LedgerImage, PendingStatus, Transfer,
    TransferFlags,
};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use serde::{Deserialize, Serialize};

/// What the files of a snapshot are: refused when it differs.
pub const FORMAT: &str = "kizo-snapshot";
/// The version written: 2 adds the filters file. A reader takes this one and every version in
/// [`FORMAT_VERSIONS_READ`], and refuses any other.
pub const FORMAT_VERSION: u32 = 2;
pub const FORMAT_VERSIONS_READ: [u32; 2] = [1, 2];
/// The name of the filters file (version 2, when the image has filters).
pub const FILTERS_FILE: &str = "filters.rkyv";
/// Most filters (one per shard of the engine that saved the image).
pub const FILTERS_MAX: u64 = 256;
/// The manifest's file name inside a snapshot.
pub const MANIFEST: &str = "manifest.json";
/// Most parts in one snapshot (they are written and read in parallel).
pub const PARTS_MAX: u32 = 256;
/// Largest manifest accepted (it lists at most `PARTS_MAX` files).
pub const MANIFEST_BYTES_MAX: u64 = 1 << 20;

/// The description of a snapshot, written last: a snapshot without one is unfinished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// The last commit included.
    pub lsn: u64,
    /// The largest timestamp assigned up to `lsn` (ns since the epoch); also ties the snapshot
    /// to its log: the log's commit `lsn` has the same.
    pub timestamp_max: u64,
    /// When the snapshot was written (RFC 3339).
    pub created_at: String,
    /// How many parts the lists are split into (contiguous slices, read in parallel). Any
    /// shard count loads any snapshot: each shard takes the ids it owns.
    pub shard_count: u32,
    pub accounts: u64,
    pub transfers: u64,
    pub pending: u64,
    pub failed: u64,
    /// How many id filters the filters file holds (0: none, and no such file; version 1
    /// manifests leave it out).
    #[serde(default)]
    pub filters: u64,
    /// The files' bytes, summed.
    pub bytes: u64,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    /// CRC-32 (IEEE) of the file's bytes.
    pub crc32: u32,
}

/// Why bytes are not a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("manifest: {0}")]
    Manifest(String),
    #[error(
        "{file}: checksum mismatch (the manifest says {expected:08x}, the file has {actual:08x})"
    )]
    Checksum {
        file: String,
        expected: u32,
        actual: u32,
    },
    #[error("{file}: {bytes} bytes, the manifest says {expected}")]
    Length {
        file: String,
        bytes: u64,
        expected: u64,
    },
    #[error("{file}: not a valid part: {detail}")]
    Decode { file: String, detail: String },
    #[error("{file}: does not match the manifest: {detail}")]
    Mismatch { file: String, detail: String },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Part {
    format_version: u32,
    lsn: u64,
    timestamp_max: u64,
    index: u32,
    count: u32,
    accounts: Vec<AccountRow>,
    /// In timestamp order.
    transfers: Vec<TransferRow>,
    pending: Vec<(u128, u8)>,
    failed: Vec<(u128, u32)>,
}

/// The filters file: every shard's filter, in shard order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct FiltersFile {
    format_version: u32,
    lsn: u64,
    timestamp_max: u64,
    filters: Vec<Vec<GenerationRow>>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct GenerationRow {
    capacity: u64,
    ids: u64,
    blocks: Vec<[u32; 8]>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct AccountRow {
    id: u128,
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
    user_data_128: u128,
    user_data_64: u64,
    timestamp: u64,
    user_data_32: u32,
    ledger: u32,
    code: u16,
    flags: u16,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct TransferRow {
    id: u128,
    debit_account_id: u128,
    credit_account_id: u128,
    amount: u128,
    pending_id: u128,
    user_data_128: u128,
    user_data_64: u64,
    timestamp: u64,
    user_data_32: u32,
    timeout: u32,
    ledger: u32,
    code: u16,
    flags: u16,
}

impl From<&Account> for AccountRow {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id,
            debits_pending: a.debits_pending,
            debits_posted: a.debits_posted,
            credits_pending: a.credits_pending,
            credits_posted: a.credits_posted,
            user_data_128: a.user_data_128,
            user_data_64: a.user_data_64,
            timestamp: a.timestamp,
            user_data_32: a.user_data_32,
            ledger: a.ledger,
            code: a.code,
            flags: a.flags.0,
        }
    }
}

impl From<&ArchivedAccountRow> for Account {
    fn from(a: &ArchivedAccountRow) -> Self {
        Self {
            id: a.id.to_native(),
            debits_pending: a.debits_pending.to_native(),
            debits_posted: a.debits_posted.to_native(),
            credits_pending: a.credits_pending.to_native(),
            credits_posted: a.credits_posted.to_native(),
            user_data_128: a.user_data_128.to_native(),
            user_data_64: a.user_data_64.to_native(),
            timestamp: a.timestamp.to_native(),
            user_data_32: a.user_data_32.to_native(),
            ledger: a.ledger.to_native(),
            code: a.code.to_native(),
            flags: AccountFlags(a.flags.to_native()),
        }
    }
}

impl From<&Transfer> for TransferRow {
    fn from(t: &Transfer) -> Self {
        Self {
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount: t.amount,
            pending_id: t.pending_id,
            user_data_128: t.user_data_128,
            user_data_64: t.user_data_64,
            timestamp: t.timestamp,
            user_data_32: t.user_data_32,
            timeout: t.timeout,
            ledger: t.ledger,
            code: t.code,
            flags: t.flags.0,
        }
    }
}

impl From<&ArchivedTransferRow> for Transfer {
    fn from(t: &ArchivedTransferRow) -> Self {
        Self {
            id: t.id.to_native(),
            debit_account_id: t.debit_account_id.to_native(),
            credit_account_id: t.credit_account_id.to_native(),
            amount: t.amount.to_native(),
            pending_id: t.pending_id.to_native(),
            user_data_128: t.user_data_128.to_native(),
            user_data_64: t.user_data_64.to_native(),
            timestamp: t.timestamp.to_native(),
            user_data_32: t.user_data_32.to_native(),
            timeout: t.timeout.to_native(),
            ledger: t.ledger.to_native(),
            code: t.code.to_native(),
            flags: TransferFlags(t.flags.to_native()),
        }
    }
}

fn status_code(status: PendingStatus) -> u8 {
    match status {
        PendingStatus::Pending => 0,
        PendingStatus::Posted => 1,
        PendingStatus::Voided => 2,
        PendingStatus::Expired => 3,
    }
}

fn status_from(code: u8) -> Option<PendingStatus> {
    Some(match code {
        0 => PendingStatus::Pending,
        1 => PendingStatus::Posted,
        2 => PendingStatus::Voided,
        3 => PendingStatus::Expired,
        _ => return None,
    })
}

/// The name of part `index`.
pub fn part_name(index: u32) -> String {
    format!("part-{index:03}.rkyv")
}

/// A snapshot in memory: its manifest and its parts' bytes, named as in the manifest.
pub struct Encoded {
    pub manifest: Manifest,
    pub parts: Vec<(String, AlignedVec)>,
}

impl Encoded {
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(&self.manifest).expect("a manifest always serializes");
        bytes.push(b'\n');
        bytes
    }
}

/// The `index`th of `count` contiguous slices of `items`.
fn slice_of<T>(items: &[T], index: usize, count: usize) -> &[T] {
    let bound = |i: usize| items.len() * i / count;
    &items[bound(index)..bound(index + 1)]
}

/// Encodes `image` (canonical, see [`LedgerImage::canonicalize`]) in `parts` parts, in
/// parallel. Part `i` holds the `i`th contiguous slice of each list, so that the parts read
/// back in order are the canonical image again, without sorting.
pub fn encode(image: &LedgerImage, parts: u32, created_at: &str) -> Encoded {
    assert!((1..=PARTS_MAX).contains(&parts));
    let count = parts as usize;
    let parts: Vec<(String, AlignedVec)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .map(|index| scope.spawn(move || encode_part(image, index, count)))
            .collect();
        workers
            .into_iter()
            .enumerate()
            .map(|(index, worker)| {
                let bytes = worker.join().expect("encoding a part never panics");
                (part_name(index as u32), bytes)
            })
            .collect()
    });
    let mut parts = parts;
    if !image.filters.is_empty() {
        parts.push((FILTERS_FILE.to_string(), encode_filters(image)));
    }
    let files: Vec<FileEntry> = parts
        .iter()
        .map(|(name, bytes)| FileEntry {
            name: name.clone(),
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        lsn: image.lsn,
        timestamp_max: image.timestamp_max,
        created_at: created_at.into(),
        shard_count: count as u32,
        accounts: image.accounts.len() as u64,
        transfers: image.transfers.len() as u64,
        pending: image.pending.len() as u64,
        failed: image.failed.len() as u64,
        filters: image.filters.len() as u64,
        bytes: files.iter().map(|f| f.bytes).sum(),
        files,
    };
    Encoded { manifest, parts }
}

fn encode_part(image: &LedgerImage, index: usize, count: usize) -> AlignedVec {
    let part = Part {
        format_version: FORMAT_VERSION,
        lsn: image.lsn,
        timestamp_max: image.timestamp_max,
        index: index as u32,
        count: count as u32,
        accounts: slice_of(&image.accounts, index, count)
            .iter()
            .map(AccountRow::from)
            .collect(),
        transfers: slice_of(&image.transfers, index, count)
            .iter()
            .map(TransferRow::from)
            .collect(),
        pending: slice_of(&image.pending, index, count)
            .iter()
            .map(|&(id, status)| (id, status_code(status)))
            .collect(),
        failed: slice_of(&image.failed, index, count)
            .iter()
            .map(|&(id, result)| (id, result as u32))
            .collect(),
    };
    rkyv::to_bytes::<rancor::Error>(&part).expect("a part always serializes")
}

fn encode_filters(image: &LedgerImage) -> AlignedVec {
    let file = FiltersFile {
        format_version: FORMAT_VERSION,
        lsn: image.lsn,
        timestamp_max: image.timestamp_max,
        filters: image
            .filters
            .iter()
            .map(|filter| {
                filter
                    .generations()
                    .iter()
                    .map(|g| GenerationRow {
                        capacity: g.capacity,
                        ids: g.ids,
                        blocks: g.blocks.clone(),
                    })
                    .collect()
            })
            .collect(),
    };
    rkyv::to_bytes::<rancor::Error>(&file).expect("filters always serialize")
}

/// Reads a manifest, checking what can be checked without the parts.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, FormatError> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|error| FormatError::Manifest(error.to_string()))?;
    let bad = |detail: String| Err(FormatError::Manifest(detail));
    if manifest.format != FORMAT {
        return bad(format!("format {:?}, expected {FORMAT:?}", manifest.format));
    }
    if !FORMAT_VERSIONS_READ.contains(&manifest.format_version) {
        return bad(format!(
            "format version {}, this build reads {FORMAT_VERSIONS_READ:?}",
            manifest.format_version
        ));
    }
    if !(1..=PARTS_MAX).contains(&manifest.shard_count) {
        return bad(format!("shard count {}", manifest.shard_count));
    }
    if manifest.filters > FILTERS_MAX || (manifest.filters > 0 && manifest.format_version < 2) {
        return bad(format!("{} filters", manifest.filters));
    }
    let mut expected: Vec<String> = (0..manifest.shard_count).map(part_name).collect();
    if manifest.filters > 0 {
        expected.push(FILTERS_FILE.into());
    }
    let listed: Vec<&String> = manifest.files.iter().map(|f| &f.name).collect();
    if listed.len() != expected.len() || listed.iter().zip(&expected).any(|(a, b)| *a != b) {
        return bad(format!("files {listed:?}, expected {expected:?}"));
    }
    if manifest.bytes != manifest.files.iter().map(|f| f.bytes).sum::<u64>() {
        return bad("bytes is not the sum of the files' bytes".into());
    }
    Ok(manifest)
}

/// Checks the parts against the manifest (length, checksum, decoding, headers, counts) and
/// decodes them, in parallel, into one canonical image. Does not run [`LedgerImage::check`].
pub fn decode<B: std::ops::Deref<Target = [u8]> + Sync>(
    manifest: &Manifest,
    parts: &[B],
) -> Result<LedgerImage, FormatError> {
    if parts.len() != manifest.files.len() {
        return Err(FormatError::Manifest(format!(
            "{} files listed, {} given",
            manifest.files.len(),
            parts.len()
        )));
    }
    let (parts, filters_file) = parts.split_at(manifest.shard_count as usize);
    let filters = match filters_file.first() {
        Some(bytes) => decode_filters(manifest, &manifest.files[parts.len()], bytes)?,
        None => Vec::new(),
    };
    // 1. Every part checked and opened, in parallel.
    let opened: Vec<Result<&ArchivedPart, FormatError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = manifest
            .files
            .iter()
            .zip(parts)
            .enumerate()
            .map(|(index, (entry, bytes))| {
                scope.spawn(move || open_part(manifest, index as u32, entry, bytes))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("opening a part never panics"))
            .collect()
    });
    let opened = opened.into_iter().collect::<Result<Vec<_>, _>>()?;
    let sum = |f: fn(&ArchivedPart) -> usize| opened.iter().map(|p| f(p)).sum::<usize>();
    let counts = [
        sum(|p| p.accounts.len()),
        sum(|p| p.transfers.len()),
        sum(|p| p.pending.len()),
        sum(|p| p.failed.len()),
    ];
    let listed = [
        manifest.accounts,
        manifest.transfers,
        manifest.pending,
        manifest.failed,
    ];
    if counts.iter().zip(listed).any(|(&n, m)| n as u64 != m) {
        return Err(FormatError::Manifest(format!(
            "counts {listed:?} (accounts, transfers, pending, failed), the parts hold {counts:?}"
        )));
    }
    // 2. Each part converted into its own slice of the image's lists, in parallel.
    let mut image = LedgerImage {
        lsn: manifest.lsn,
        timestamp_max: manifest.timestamp_max,
        accounts: vec![Account::default(); counts[0]],
        transfers: vec![Transfer::default(); counts[1]],
        pending: vec![(0, PendingStatus::Pending); counts[2]],
        failed: vec![(0, CreateTransferResult::ExceedsCredits); counts[3]],
        filters,
    };
    let mut accounts = image.accounts.as_mut_slice();
    let mut transfers = image.transfers.as_mut_slice();
    let mut pending = image.pending.as_mut_slice();
    let mut failed = image.failed.as_mut_slice();
    let converted: Vec<Result<(), FormatError>> = std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (part, entry) in opened.iter().zip(&manifest.files) {
            let (a, rest) = std::mem::take(&mut accounts).split_at_mut(part.accounts.len());
            accounts = rest;
            let (t, rest) = std::mem::take(&mut transfers).split_at_mut(part.transfers.len());
            transfers = rest;
            let (p, rest) = std::mem::take(&mut pending).split_at_mut(part.pending.len());
            pending = rest;
            let (f, rest) = std::mem::take(&mut failed).split_at_mut(part.failed.len());
            failed = rest;
            workers.push(scope.spawn(move || convert_part(part, &entry.name, a, t, p, f)));
        }
        workers
            .into_iter()
            .map(|worker| worker.join().expect("converting a part never panics"))
            .collect()
    });
    converted.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(image)
}

/// Checks the filters file as a part is checked, and reads its filters.
fn decode_filters(
    manifest: &Manifest,
    entry: &FileEntry,
    bytes: &[u8],
) -> Result<Vec<IdFilter>, FormatError> {
    let file = || entry.name.clone();
    check_bytes(entry, bytes)?;
    let archived = rkyv::access::<ArchivedFiltersFile, rancor::Error>(bytes).map_err(|error| {
        FormatError::Decode {
            file: file(),
            detail: error.to_string(),
        }
    })?;
    let header = (
        archived.format_version.to_native(),
        archived.lsn.to_native(),
        archived.timestamp_max.to_native(),
        archived.filters.len() as u64,
    );
    let expected = (
        manifest.format_version,
        manifest.lsn,
        manifest.timestamp_max,
        manifest.filters,
    );
    if header != expected {
        return Err(FormatError::Mismatch {
            file: file(),
            detail: format!(
                "(version, LSN, timestamp, filters) is {header:?}, the manifest says {expected:?}"
            ),
        });
    }
    let mut filters = Vec::with_capacity(archived.filters.len());
    for generations in archived.filters.iter() {
        let generations: Vec<Generation> = generations
            .iter()
            .map(|g| Generation {
                capacity: g.capacity.to_native(),
                ids: g.ids.to_native(),
                blocks: g
                    .blocks
                    .iter()
                    .map(|block| std::array::from_fn(|i| block[i].to_native()))
                    .collect(),
            })
            .collect();
        if let Some(bad) = generations.iter().find(|g| !g.is_well_formed()) {
            return Err(FormatError::Decode {
                file: file(),
                detail: format!(
                    "a filter generation of {} blocks for {} ids",
                    bad.blocks.len(),
                    bad.capacity
                ),
            });
        }
        filters.push(IdFilter::from_generations(generations));
    }
    Ok(filters)
}

/// The file's length and checksum against its manifest entry.
fn check_bytes(entry: &FileEntry, bytes: &[u8]) -> Result<(), FormatError> {
    if bytes.len() as u64 != entry.bytes {
        return Err(FormatError::Length {
            file: entry.name.clone(),
            bytes: bytes.len() as u64,
            expected: entry.bytes,
        });
    }
    let actual = crc32fast::hash(bytes);
    if actual != entry.crc32 {
        return Err(FormatError::Checksum {
            file: entry.name.clone(),
            expected: entry.crc32,
            actual,
        });
    }
    Ok(())
}

fn open_part<'a>(
    manifest: &Manifest,
    index: u32,
    entry: &FileEntry,
    bytes: &'a [u8],
) -> Result<&'a ArchivedPart, FormatError> {
    let file = || entry.name.clone();
    check_bytes(entry, bytes)?;
    let part = rkyv::access::<ArchivedPart, rancor::Error>(bytes).map_err(|error| {
        FormatError::Decode {
            file: file(),
            detail: error.to_string(),
        }
    })?;
    let header = (
        part.format_version.to_native(),
        part.lsn.to_native(),
        part.timestamp_max.to_native(),
        part.index.to_native(),
        part.count.to_native(),
    );
    let expected = (
        manifest.format_version,
        manifest.lsn,
        manifest.timestamp_max,
        index,
        manifest.shard_count,
    );
    if header != expected {
        return Err(FormatError::Mismatch {
            file: file(),
            detail: format!(
                "(version, LSN, timestamp, part, parts) is {header:?}, the manifest says {expected:?}"
            ),
        });
    }
    Ok(part)
}

fn convert_part(
    part: &ArchivedPart,
    file: &str,
    accounts: &mut [Account],
    transfers: &mut [Transfer],
    pending: &mut [(u128, PendingStatus)],
    failed: &mut [(u128, CreateTransferResult)],
) -> Result<(), FormatError> {
    let decode_error = |detail: String| FormatError::Decode {
        file: file.into(),
        detail,
    };
    for (to, from) in accounts.iter_mut().zip(part.accounts.iter()) {
        *to = Account::from(from);
    }
    for (to, from) in transfers.iter_mut().zip(part.transfers.iter()) {
        *to = Transfer::from(from);
    }
    for (to, from) in pending.iter_mut().zip(part.pending.iter()) {
        let id = from.0.to_native();
        let status = status_from(from.1)
            .ok_or_else(|| decode_error(format!("pending status {} of {id}", from.1)))?;
        *to = (id, status);
    }
    for (to, from) in failed.iter_mut().zip(part.failed.iter()) {
        let id = from.0.to_native();
        let result = CreateTransferResult::from_u32(from.1.to_native())
            .filter(|r| r.is_transient())
            .ok_or_else(|| decode_error(format!("failure code {} of {id}", from.1)))?;
        *to = (id, result);
    }
    Ok(())
}
