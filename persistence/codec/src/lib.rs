//! The log's byte format: one *frame* per flushed batch, holding one or more commits.
//!
//! Everything is little-endian. A frame is a 32-byte header and a body:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `KZWL` |
//! | 4 | 2 | format version (1) |
//! | 6 | 2 | reserved, zero |
//! | 8 | 8 | LSN of the first commit |
//! | 16 | 4 | number of commits |
//! | 20 | 4 | body length in bytes |
//! | 24 | 4 | CRC-32 (IEEE) of every other byte of the frame |
//! | 28 | 4 | reserved, zero |
//!
//! The body is the commits in LSN order, each `lsn: u64, timestamp_max: u64, record count: u32`
//! followed by its records. A record is a tag byte and its fields in declaration order; every
//! integer wider than a byte is written *compact*: one byte `n` (0..=width) and then the `n` low
//! bytes of the value, so that the zeros that fill most fields (user data, high halves of
//! amounts) take one byte each. A transfer with random 128-bit ids takes about 75 bytes
//! instead of 128.
//!
//! Decoding checks the checksum first and then every length, tag, count and LSN, so a damaged
//! frame is refused with the LSN it starts at, never half-read.
//!
//! This crate never contains: I/O, an async runtime, a clock or logging. It turns commits into
//! bytes and bytes into commits; the log writers in `kizo-persistence` and the simulator's log
//! store the bytes (checked by `sim/tests/pure_crates.rs`).

use kizo_ledger::{
    Account, AccountFlags, Commit, CreateTransferResult, Record, Transfer, TransferFlags,
};

pub const MAGIC: [u8; 4] = *b"KZWL";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
/// The most bytes one frame may hold: a flush never grows past this.
pub const FRAME_LEN_MAX: usize = 256 << 20;

const TAG_ACCOUNT_CREATED: u8 = 1;
const TAG_TRANSFER_CREATED: u8 = 2;
const TAG_PENDING_POSTED: u8 = 3;
const TAG_PENDING_VOIDED: u8 = 4;
const TAG_PENDING_EXPIRED: u8 = 5;
const TAG_TRANSFER_FAILED: u8 = 6;

/// Why a frame could not be decoded; `lsn` is the frame's first LSN as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("frame at LSN {lsn}: {detail}")]
pub struct DecodeError {
    pub lsn: u64,
    pub detail: String,
}

/// The fixed part of a frame, readable before the body is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub first_lsn: u64,
    pub commit_count: u32,
    pub body_len: u32,
}

impl FrameHeader {
    pub fn last_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.commit_count) - 1
    }

    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}

/// Builds one frame from consecutive commits.
pub struct FrameEncoder {
    bytes: Vec<u8>,
    first_lsn: u64,
    commit_count: u32,
}

impl FrameEncoder {
    pub fn new(first_lsn: u64) -> Self {
        assert!(first_lsn > 0, "LSNs start at 1");
        let mut bytes = Vec::with_capacity(64 << 10);
        bytes.resize(HEADER_LEN, 0);
        Self {
            bytes,
            first_lsn,
            commit_count: 0,
        }
    }

    pub fn next_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.commit_count)
    }

    pub fn commit_count(&self) -> u32 {
        self.commit_count
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commit_count == 0
    }

    pub fn push(&mut self, commit: &Commit) {
        assert_eq!(
            commit.lsn,
            self.next_lsn(),
            "a frame holds consecutive LSNs"
        );
        let records = u32::try_from(commit.records.len()).expect("records per commit fit u32");
        let b = &mut self.bytes;
        b.extend_from_slice(&commit.lsn.to_le_bytes());
        b.extend_from_slice(&commit.timestamp_max.to_le_bytes());
        b.extend_from_slice(&records.to_le_bytes());
        for record in &commit.records {
            encode_record(b, record);
        }
        self.commit_count += 1;
    }

    /// The finished frame: the header filled in and the checksum computed.
    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.commit_count > 0, "a frame holds at least one commit");
        let body_len = u32::try_from(self.bytes.len() - HEADER_LEN).expect("frame fits u32");
        assert!(self.bytes.len() <= FRAME_LEN_MAX, "frame too large");
        let header = &mut self.bytes[..HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&self.first_lsn.to_le_bytes());
        header[16..20].copy_from_slice(&self.commit_count.to_le_bytes());
        header[20..24].copy_from_slice(&body_len.to_le_bytes());
        let crc = checksum(&self.bytes);
        self.bytes[24..28].copy_from_slice(&crc.to_le_bytes());
        self.bytes
    }
}

fn checksum(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[..24]);
    hasher.update(&frame[28..]);
    hasher.finalize()
}

/// Reads a frame's header; `expected_lsn` names the frame in errors when the header itself is
/// damaged.
pub fn decode_header(bytes: &[u8], expected_lsn: u64) -> Result<FrameHeader, DecodeError> {
    let fail = |detail: String| DecodeError {
        lsn: expected_lsn,
        detail,
    };
    if bytes.len() < HEADER_LEN {
        return Err(fail(format!(
            "{} bytes, shorter than a header",
            bytes.len()
        )));
    }
    if bytes[0..4] != MAGIC {
        return Err(fail("bad magic".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(fail(format!(
            "format version {version}; this build reads version {VERSION}"
        )));
    }
    let header = FrameHeader {
        first_lsn: le_u64(&bytes[8..16]),
        commit_count: le_u32(&bytes[16..20]),
        body_len: le_u32(&bytes[20..24]),
    };
    if header.first_lsn == 0 || header.commit_count == 0 {
        return Err(fail("zero LSN or no commits".into()));
    }
    if header.frame_len() > FRAME_LEN_MAX {
        return Err(fail(format!(
            "length {} over the limit",
            header.frame_len()
        )));
    }
    Ok(header)
}

/// Decodes a whole frame, checksum first. `expected_lsn` is where the frame sits in the log
/// (the LSN after the previous frame's last): errors name it until the checksum vouches for the
/// header, and a frame that starts elsewhere is refused.
pub fn decode_frame(bytes: &[u8], expected_lsn: u64) -> Result<Vec<Commit>, DecodeError> {
    let header = decode_header(bytes, expected_lsn)?;
    let fail = |detail: String| DecodeError {
        lsn: expected_lsn,
        detail,
    };
    if bytes.len() != header.frame_len() {
        return Err(fail(format!(
            "{} bytes, the header says {}",
            bytes.len(),
            header.frame_len()
        )));
    }
    let stored = le_u32(&bytes[24..28]);
    let computed = checksum(bytes);
    if stored != computed {
        return Err(fail(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        )));
    }
    if header.first_lsn != expected_lsn {
        return Err(fail(format!(
            "the frame starts at LSN {}, not where it sits in the log",
            header.first_lsn
        )));
    }
    let mut reader = Reader {
        bytes: &bytes[HEADER_LEN..],
        at: 0,
    };
    let mut commits = Vec::with_capacity(header.commit_count as usize);
    for index in 0..u64::from(header.commit_count) {
        let lsn = header.first_lsn + index;
        let commit = decode_commit(&mut reader, lsn).map_err(|detail| DecodeError {
            lsn,
            detail: detail.to_string(),
        })?;
        commits.push(commit);
    }
    if reader.at != reader.bytes.len() {
        return Err(fail("bytes after the last commit".into()));
    }
    Ok(commits)
}

fn decode_commit(reader: &mut Reader<'_>, lsn: u64) -> Result<Commit, &'static str> {
    if reader.fixed_u64()? != lsn {
        return Err("commit LSN out of sequence");
    }
    let timestamp_max = reader.fixed_u64()?;
    let count = reader.fixed_u32()? as usize;
    // Every record takes at least 2 bytes: a count larger than that is damage, not a hint
    // to allocate.
    if count > reader.remaining() / 2 {
        return Err("record count larger than the frame");
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(decode_record(reader)?);
    }
    Ok(Commit {
        lsn,
        timestamp_max,
        records,
    })
}

fn encode_record(b: &mut Vec<u8>, record: &Record) {
    match record {
        Record::AccountCreated(account) => {
            b.push(TAG_ACCOUNT_CREATED);
            encode_account(b, account);
        }
        Record::TransferCreated(transfer) => {
            b.push(TAG_TRANSFER_CREATED);
            encode_transfer(b, transfer);
        }
        Record::PendingPosted {
            transfer,
            pending_amount,
        } => {
            b.push(TAG_PENDING_POSTED);
            encode_transfer(b, transfer);
            put(b, *pending_amount);
        }
        Record::PendingVoided {
            transfer,
            pending_amount,
        } => {
            b.push(TAG_PENDING_VOIDED);
            encode_transfer(b, transfer);
            put(b, *pending_amount);
        }
        Record::PendingExpired {
            pending_id,
            debit_account_id,
            credit_account_id,
            amount,
        } => {
            b.push(TAG_PENDING_EXPIRED);
            put(b, *pending_id);
            put(b, *debit_account_id);
            put(b, *credit_account_id);
            put(b, *amount);
        }
        Record::TransferFailed { id, result } => {
            b.push(TAG_TRANSFER_FAILED);
            put(b, *id);
            put(b, *result as u32);
        }
    }
}

fn decode_record(r: &mut Reader<'_>) -> Result<Record, &'static str> {
    Ok(match r.byte()? {
        TAG_ACCOUNT_CREATED => Record::AccountCreated(decode_account(r)?),
        TAG_TRANSFER_CREATED => Record::TransferCreated(decode_transfer(r)?),
        TAG_PENDING_POSTED => Record::PendingPosted {
            transfer: decode_transfer(r)?,
            pending_amount: r.get()?,
        },
        TAG_PENDING_VOIDED => Record::PendingVoided {
            transfer: decode_transfer(r)?,
            pending_amount: r.get()?,
        },
        TAG_PENDING_EXPIRED => Record::PendingExpired {
            pending_id: r.get()?,
            debit_account_id: r.get()?,
            credit_account_id: r.get()?,
            amount: r.get()?,
        },
        TAG_TRANSFER_FAILED => Record::TransferFailed {
            id: r.get()?,
            result: CreateTransferResult::from_u32(r.get()?).ok_or("unknown result code")?,
        },
        _ => return Err("unknown record tag"),
    })
}

fn encode_account(b: &mut Vec<u8>, a: &Account) {
    put(b, a.id);
    put(b, a.debits_pending);
    put(b, a.debits_posted);
    put(b, a.credits_pending);
    put(b, a.credits_posted);
    put(b, a.user_data_128);
    put(b, a.user_data_64);
    put(b, a.user_data_32);
    put(b, a.ledger);
    put(b, a.code);
    put(b, a.flags.0);
    put(b, a.timestamp);
}

fn decode_account(r: &mut Reader<'_>) -> Result<Account, &'static str> {
    Ok(Account {
        id: r.get()?,
        debits_pending: r.get()?,
        debits_posted: r.get()?,
        credits_pending: r.get()?,
        credits_posted: r.get()?,
        user_data_128: r.get()?,
        user_data_64: r.get()?,
        user_data_32: r.get()?,
        ledger: r.get()?,
        code: r.get()?,
        flags: AccountFlags(r.get()?),
        timestamp: r.get()?,
    })
}

fn encode_transfer(b: &mut Vec<u8>, t: &Transfer) {
    put(b, t.id);
    put(b, t.debit_account_id);
    put(b, t.credit_account_id);
    put(b, t.amount);
    put(b, t.pending_id);
    put(b, t.user_data_128);
    put(b, t.user_data_64);
    put(b, t.user_data_32);
    put(b, t.timeout);
    put(b, t.ledger);
    put(b, t.code);
    put(b, t.flags.0);
    put(b, t.timestamp);
}

fn decode_transfer(r: &mut Reader<'_>) -> Result<Transfer, &'static str> {
    Ok(Transfer {
        id: r.get()?,
        debit_account_id: r.get()?,
        credit_account_id: r.get()?,
        amount: r.get()?,
        pending_id: r.get()?,
        user_data_128: r.get()?,
        user_data_64: r.get()?,
        user_data_32: r.get()?,
        timeout: r.get()?,
        ledger: r.get()?,
        code: r.get()?,
        flags: TransferFlags(r.get()?),
        timestamp: r.get()?,
    })
}

/// Unsigned integers in the compact form: a length byte, then that many low bytes.
trait Compact: Sized + Copy {
    const WIDTH: usize;
    fn to_le(self) -> [u8; 16];
    fn from_le(bytes: [u8; 16]) -> Self;
}

macro_rules! compact {
    ($($t:ty),*) => {$(
        impl Compact for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn to_le(self) -> [u8; 16] {
                u128::from(self).to_le_bytes()
            }
            #[inline]
            fn from_le(bytes: [u8; 16]) -> Self {
                // Only the low WIDTH bytes are ever filled, so this never truncates.
                u128::from_le_bytes(bytes) as $t
            }
        }
    )*};
}
compact!(u16, u32, u64, u128);

#[inline]
fn put<T: Compact>(b: &mut Vec<u8>, value: T) {
    let bytes = value.to_le();
    let len = 16 - (u128::from_le_bytes(bytes).leading_zeros() as usize / 8);
    debug_assert!(len <= T::WIDTH);
    b.push(len as u8);
    b.extend_from_slice(&bytes[..len]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, len: usize) -> Result<&[u8], &'static str> {
        if len > self.remaining() {
            return Err("record runs past the frame");
        }
        let slice = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn fixed_u64(&mut self) -> Result<u64, &'static str> {
        Ok(le_u64(self.take(8)?))
    }

    fn fixed_u32(&mut self) -> Result<u32, &'static str> {
        Ok(le_u32(self.take(4)?))
    }

    #[inline]
    fn get<T: Compact>(&mut self) -> Result<T, &'static str> {
        let len = self.byte()? as usize;
        if len > T::WIDTH {
            return Err("integer wider than its field");
        }
        if let Some(window) = self.bytes.get(self.at..self.at + 16) {
            // Fast path, away from the frame's end: one 16-byte load, masked to `len` bytes.
            let value = u128::from_le_bytes(window.try_into().expect("16 bytes"));
            let value = if len == 16 {
                value
            } else {
                value & ((1u128 << (8 * len)) - 1)
            };
            self.at += len;
            return Ok(T::from_le(value.to_le_bytes()));
        }
        let mut bytes = [0u8; 16];
        bytes[..len].copy_from_slice(self.take(len)?);
        Ok(T::from_le(bytes))
    }
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_transfer() -> impl Strategy<Value = Transfer> {
        (
            (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()),
            (any::<u128>(), any::<u128>(), any::<u64>(), any::<u32>()),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
                any::<u64>(),
            ),
        )
            .prop_map(
                |((id, dr, cr, amount), (pending, u128_, u64_, u32_), rest)| {
                    let (timeout, ledger, code, flags, timestamp) = rest;
                    Transfer {
                        id,
                        debit_account_id: dr,
                        credit_account_id: cr,
                        amount,
                        pending_id: pending,
                        user_data_128: u128_,
                        user_data_64: u64_,
                        user_data_32: u32_,
                        timeout,
                        ledger,
                        code,
                        flags: TransferFlags(flags),
                        timestamp,
                    }
                },
            )
    }

    fn any_account() -> impl Strategy<Value = Account> {
        (
            (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()),
            (any::<u128>(), any::<u128>(), any::<u64>(), any::<u32>()),
            (any::<u32>(), any::<u16>(), any::<u16>(), any::<u64>()),
        )
            .prop_map(|((id, dp, dq, cp), (cq, u128_, u64_, u32_), rest)| {
                let (ledger, code, flags, timestamp) = rest;
                Account {
                    id,
                    debits_pending: dp,
                    debits_posted: dq,
                    credits_pending: cp,
                    credits_posted: cq,
                    user_data_128: u128_,
                    user_data_64: u64_,
                    user_data_32: u32_,
                    ledger,
                    code,
                    flags: AccountFlags(flags),
                    timestamp,
                }
            })
    }

    fn any_record() -> impl Strategy<Value = Record> {
        let result = proptest::sample::select(CreateTransferResult::ALL);
        prop_oneof![
            any_account().prop_map(Record::AccountCreated),
            any_transfer().prop_map(Record::TransferCreated),
            (any_transfer(), any::<u128>()).prop_map(|(transfer, pending_amount)| {
                Record::PendingPosted {
                    transfer,
                    pending_amount,
                }
            }),
            (any_transfer(), any::<u128>()).prop_map(|(transfer, pending_amount)| {
                Record::PendingVoided {
                    transfer,
                    pending_amount,
                }
            }),
            (any::<u128>(), any::<u128>(), any::<u128>(), any::<u128>()).prop_map(
                |(pending_id, debit_account_id, credit_account_id, amount)| {
                    Record::PendingExpired {
                        pending_id,
                        debit_account_id,
                        credit_account_id,
                        amount,
                    }
                }
            ),
            (any::<u128>(), result).prop_map(|(id, result)| Record::TransferFailed { id, result }),
        ]
    }

    fn any_frame() -> impl Strategy<Value = Vec<Commit>> {
        (
            1..1_000_000u64,
            proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(any_record(), 0..20)),
                1..5,
            ),
        )
            .prop_map(|(first_lsn, commits)| {
                commits
                    .into_iter()
                    .enumerate()
                    .map(|(i, (timestamp_max, records))| Commit {
                        lsn: first_lsn + i as u64,
                        timestamp_max,
                        records,
                    })
                    .collect()
            })
    }

    fn encode(commits: &[Commit]) -> Vec<u8> {
        let mut encoder = FrameEncoder::new(commits[0].lsn);
        for commit in commits {
            encoder.push(commit);
        }
        encoder.finish()
    }

    proptest! {
        #[test]
        fn frames_round_trip(commits in any_frame()) {
            let bytes = encode(&commits);
            prop_assert_eq!(decode_frame(&bytes, commits[0].lsn).unwrap(), commits);
        }

        #[test]
        fn any_flipped_bit_is_detected(commits in any_frame(), at in any::<prop::sample::Index>(), bit in 0..8u8) {
            let mut bytes = encode(&commits);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert!(decode_frame(&bytes, commits[0].lsn).is_err());
        }

        #[test]
        fn any_truncation_is_detected(commits in any_frame(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&commits);
            let cut = cut.index(bytes.len());
            prop_assert!(decode_frame(&bytes[..cut], commits[0].lsn).is_err());
        }
    }

    #[test]
    fn compact_integers_take_their_significant_bytes() {
        let mut b = Vec::new();
        put(&mut b, 0u128);
        put(&mut b, 255u64);
        put(&mut b, 256u32);
        put(&mut b, u128::MAX);
        assert_eq!(b.len(), 1 + 2 + 3 + 17);
        let mut r = Reader { bytes: &b, at: 0 };
        assert_eq!(r.get::<u128>(), Ok(0));
        assert_eq!(r.get::<u64>(), Ok(255));
        assert_eq!(r.get::<u32>(), Ok(256));
        assert_eq!(r.get::<u128>(), Ok(u128::MAX));
        // A length wider than the field is damage.
        let mut r = Reader {
            bytes: &[5, 1, 2, 3, 4, 5],
            at: 0,
        };
        assert!(r.get::<u32>().is_err());
    }

    #[test]
    fn a_typical_transfer_is_compact() {
        let transfer = Transfer {
            timestamp: 1_764_000_000_000_000_000,
            ..Transfer::new(u128::MAX - 1, u128::MAX - 2, u128::MAX - 3, 2_500, 840, 1)
        };
        let mut b = Vec::new();
        encode_record(&mut b, &Record::TransferCreated(transfer));
        assert!(b.len() <= 80, "{} bytes", b.len());
    }

    #[test]
    fn a_flipped_bit_in_the_lsn_names_where_the_frame_sits() {
        let commits = vec![Commit {
            lsn: 29,
            timestamp_max: 7,
            records: vec![],
        }];
        let mut bytes = encode(&commits);
        bytes[12] ^= 0x04; // the high half of first_lsn
        let error = decode_frame(&bytes, 29).unwrap_err();
        assert_eq!(error.lsn, 29, "{error}");
        // A whole, well-formed frame in the wrong place is refused too.
        let elsewhere = encode(&commits);
        assert_eq!(decode_frame(&elsewhere, 30).unwrap_err().lsn, 30);
    }

    #[test]
    fn a_damaged_header_names_the_expected_lsn() {
        let error = decode_frame(b"not a frame", 42).unwrap_err();
        assert_eq!(error.lsn, 42);
    }
}
