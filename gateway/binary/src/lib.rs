//! Kizo's binary batch format, the ledger API's alternative to JSON
//! ([`MEDIA_TYPE`]): fixed-size little-endian records, so that a batch of 8189 transfers is
//! read and written without parsing or printing a decimal number. Pure: bytes in, records out,
//! and back; no I/O.
//!
//! - An account or a transfer is a [`RECORD_SIZE`]-byte record in TigerBeetle's layout
//!   ([`encode_account`], [`decode_account`], ...), so that its users' encoders serve here.
//! - A lookup is a list of [`ID_SIZE`]-byte ids; its answer, the records found, in the order
//!   asked, those not found left out.
//! - A create's answer lists the events that were not created, as [`RESULT_SIZE`]-byte
//!   `(index, code)` pairs in index order: an event not listed was created. Codes are the
//!   numbers of [`CreateAccountResult`] and [`CreateTransferResult`].
//!
//! A body is checked whole before any record is used: its length, the count, reserved bytes
//! and flag bits. A malformed body is a [`DecodeError`] naming the byte offset where it breaks.

use kizo_ledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Transfer, TransferFlags,
    BATCH_EVENTS_MAX,
};

/// The media type of a binary body, in `Content-Type` and `Accept`.
pub const MEDIA_TYPE: &str = "application/vnd.kizo.batch.v1";
/// The size of an account or a transfer record.
pub const RECORD_SIZE: usize = 128;
/// The size of an id in a lookup.
pub const ID_SIZE: usize = 16;
/// The size of an `(index, code)` result pair.
pub const RESULT_SIZE: usize = 8;

/// Why a body is not a batch. `offset` is the byte where it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is empty: a batch holds at least one event")]
    Empty,
    #[error("at byte {offset}: the body is {len} bytes, not a whole number of {size}-byte items")]
    Truncated {
        offset: usize,
        len: usize,
        size: usize,
    },
    #[error("at byte {offset}: {count} items; at most {max} per call")]
    TooMany {
        offset: usize,
        count: usize,
        max: usize,
    },
    #[error("at byte {offset}: reserved bytes must be zero")]
    Reserved { offset: usize },
    #[error("at byte {offset}: result code {code} is not one this version knows")]
    UnknownResult { offset: usize, code: u32 },
    #[error("at byte {offset}: result indexes must rise and stay within the batch")]
    ResultIndex { offset: usize },
}

impl DecodeError {
    /// The byte offset where the body breaks.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::Empty => 0,
            DecodeError::Truncated { offset, .. }
            | DecodeError::TooMany { offset, .. }
            | DecodeError::Reserved { offset }
            | DecodeError::UnknownResult { offset, .. }
            | DecodeError::ResultIndex { offset } => offset,
        }
    }
}

// The byte offsets of the fields, as TigerBeetle lays them out.
mod at {
    pub const ID: usize = 0;
    // Accounts.
    pub const DEBITS_PENDING: usize = 16;
    pub const DEBITS_POSTED: usize = 32;
    pub const CREDITS_PENDING: usize = 48;
    pub const CREDITS_POSTED: usize = 64;
    // Transfers.
    pub const DEBIT_ACCOUNT_ID: usize = 16;
    pub const CREDIT_ACCOUNT_ID: usize = 32;
    pub const AMOUNT: usize = 48;
    pub const PENDING_ID: usize = 64;
    // Both.
    pub const USER_DATA_128: usize = 80;
    pub const USER_DATA_64: usize = 96;
    pub const USER_DATA_32: usize = 104;
    /// An account's reserved `u32`; a transfer's `timeout`.
    pub const RESERVED_OR_TIMEOUT: usize = 108;
    pub const LEDGER: usize = 112;
    pub const CODE: usize = 116;
    pub const FLAGS: usize = 118;
    pub const TIMESTAMP: usize = 120;
}

type Record = [u8; RECORD_SIZE];

fn u128_at(record: &Record, at: usize) -> u128 {
    u128::from_le_bytes(record[at..at + 16].try_into().expect("16 bytes"))
}
fn u64_at(record: &Record, at: usize) -> u64 {
    u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"))
}
fn u32_at(record: &Record, at: usize) -> u32 {
    u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"))
}
fn u16_at(record: &Record, at: usize) -> u16 {
    u16::from_le_bytes(record[at..at + 2].try_into().expect("2 bytes"))
}
fn put(record: &mut Record, at: usize, bytes: &[u8]) {
    record[at..at + bytes.len()].copy_from_slice(bytes);
}

pub fn encode_account(account: &Account) -> Record {
    let mut r = [0u8; RECORD_SIZE];
    put(&mut r, at::ID, &account.id.to_le_bytes());
    put(
        &mut r,
        at::DEBITS_PENDING,
        &account.debits_pending.to_le_bytes(),
    );
    put(
        &mut r,
        at::DEBITS_POSTED,
        &account.debits_posted.to_le_bytes(),
    );
    put(
        &mut r,
        at::CREDITS_PENDING,
        &account.credits_pending.to_le_bytes(),
    );
    put(
        &mut r,
        at::CREDITS_POSTED,
        &account.credits_posted.to_le_bytes(),
    );
    put(
        &mut r,
        at::USER_DATA_128,
        &account.user_data_128.to_le_bytes(),
    );
    put(
        &mut r,
        at::USER_DATA_64,
        &account.user_data_64.to_le_bytes(),
    );
    put(
        &mut r,
        at::USER_DATA_32,
        &account.user_data_32.to_le_bytes(),
    );
    put(&mut r, at::LEDGER, &account.ledger.to_le_bytes());
    put(&mut r, at::CODE, &account.code.to_le_bytes());
    put(&mut r, at::FLAGS, &account.flags.0.to_le_bytes());
    put(&mut r, at::TIMESTAMP, &account.timestamp.to_le_bytes());
    r
}

/// An account record; its reserved bytes must be zero (flag bits are the engine's to judge:
/// an unknown one is the event's `reserved_flag`, as in JSON).
pub fn decode_account(r: &Record) -> Result<Account, DecodeError> {
    if u32_at(r, at::RESERVED_OR_TIMEOUT) != 0 {
        return Err(DecodeError::Reserved {
            offset: at::RESERVED_OR_TIMEOUT,
        });
    }
    Ok(Account {
        id: u128_at(r, at::ID),
        debits_pending: u128_at(r, at::DEBITS_PENDING),
        debits_posted: u128_at(r, at::DEBITS_POSTED),
        credits_pending: u128_at(r, at::CREDITS_PENDING),
        credits_posted: u128_at(r, at::CREDITS_POSTED),
        user_data_128: u128_at(r, at::USER_DATA_128),
        user_data_64: u64_at(r, at::USER_DATA_64),
        user_data_32: u32_at(r, at::USER_DATA_32),
        ledger: u32_at(r, at::LEDGER),
        code: u16_at(r, at::CODE),
        flags: AccountFlags(u16_at(r, at::FLAGS)),
        timestamp: u64_at(r, at::TIMESTAMP),
    })
}

pub fn encode_transfer(transfer: &Transfer) -> Record {
    let mut r = [0u8; RECORD_SIZE];
    put(&mut r, at::ID, &transfer.id.to_le_bytes());
    put(
        &mut r,
        at::DEBIT_ACCOUNT_ID,
        &transfer.debit_account_id.to_le_bytes(),
    );
    put(
        &mut r,
        at::CREDIT_ACCOUNT_ID,
        &transfer.credit_account_id.to_le_bytes(),
    );
    put(&mut r, at::AMOUNT, &transfer.amount.to_le_bytes());
    put(&mut r, at::PENDING_ID, &transfer.pending_id.to_le_bytes());
    put(
        &mut r,
        at::USER_DATA_128,
        &transfer.user_data_128.to_le_bytes(),
    );
    put(
        &mut r,
        at::USER_DATA_64,
        &transfer.user_data_64.to_le_bytes(),
    );
    put(
        &mut r,
        at::USER_DATA_32,
        &transfer.user_data_32.to_le_bytes(),
    );
    put(
        &mut r,
        at::RESERVED_OR_TIMEOUT,
        &transfer.timeout.to_le_bytes(),
    );
    put(&mut r, at::LEDGER, &transfer.ledger.to_le_bytes());
    put(&mut r, at::CODE, &transfer.code.to_le_bytes());
    put(&mut r, at::FLAGS, &transfer.flags.0.to_le_bytes());
    put(&mut r, at::TIMESTAMP, &transfer.timestamp.to_le_bytes());
    r
}

/// A transfer record: every byte is a field (its checks are the engine's, per event).
pub fn decode_transfer(r: &Record) -> Transfer {
    Transfer {
        id: u128_at(r, at::ID),
        debit_account_id: u128_at(r, at::DEBIT_ACCOUNT_ID),
        credit_account_id: u128_at(r, at::CREDIT_ACCOUNT_ID),
        amount: u128_at(r, at::AMOUNT),
        pending_id: u128_at(r, at::PENDING_ID),
        user_data_128: u128_at(r, at::USER_DATA_128),
        user_data_64: u64_at(r, at::USER_DATA_64),
        user_data_32: u32_at(r, at::USER_DATA_32),
        timeout: u32_at(r, at::RESERVED_OR_TIMEOUT),
        ledger: u32_at(r, at::LEDGER),
        code: u16_at(r, at::CODE),
        flags: TransferFlags(u16_at(r, at::FLAGS)),
        timestamp: u64_at(r, at::TIMESTAMP),
    }
}

/// `body` cut into `size`-byte items, 1 to `max` of them; checked before any is read.
fn items(
    body: &[u8],
    size: usize,
    max: usize,
) -> Result<std::slice::ChunksExact<'_, u8>, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    if !body.len().is_multiple_of(size) {
        return Err(DecodeError::Truncated {
            offset: body.len() - body.len() % size,
            len: body.len(),
            size,
        });
    }
    let count = body.len() / size;
    if count > max {
        return Err(DecodeError::TooMany {
            offset: max * size,
            count,
            max,
        });
    }
    Ok(body.chunks_exact(size))
}

fn record(chunk: &[u8]) -> &Record {
    chunk.try_into().expect("chunks of RECORD_SIZE")
}

/// A `create_accounts` body: 1 to [`BATCH_EVENTS_MAX`] account records.
pub fn decode_accounts(body: &[u8]) -> Result<Vec<Account>, DecodeError> {
    items(body, RECORD_SIZE, BATCH_EVENTS_MAX)?
        .enumerate()
        .map(|(n, chunk)| {
            decode_account(record(chunk)).map_err(|error| match error {
                DecodeError::Reserved { offset } => DecodeError::Reserved {
                    offset: n * RECORD_SIZE + offset,
                },
                other => other,
            })
        })
        .collect()
}

/// A `create_transfers` body: 1 to [`BATCH_EVENTS_MAX`] transfer records.
pub fn decode_transfers(body: &[u8]) -> Result<Vec<Transfer>, DecodeError> {
    Ok(items(body, RECORD_SIZE, BATCH_EVENTS_MAX)?
        .map(|chunk| decode_transfer(record(chunk)))
        .collect())
}

pub fn encode_accounts(accounts: &[Account]) -> Vec<u8> {
    accounts.iter().flat_map(encode_account).collect()
}

pub fn encode_transfers(transfers: &[Transfer]) -> Vec<u8> {
    transfers.iter().flat_map(encode_transfer).collect()
}

/// A lookup body: 1 to [`BATCH_EVENTS_MAX`] ids.
pub fn decode_ids(body: &[u8]) -> Result<Vec<u128>, DecodeError> {
    Ok(items(body, ID_SIZE, BATCH_EVENTS_MAX)?
        .map(|chunk| u128::from_le_bytes(chunk.try_into().expect("16 bytes")))
        .collect())
}

pub fn encode_ids(ids: &[u128]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// The answer's records (of a lookup): any number, each whole.
pub fn decode_account_records(body: &[u8]) -> Result<Vec<Account>, DecodeError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    decode_accounts(body)
}

pub fn decode_transfer_records(body: &[u8]) -> Result<Vec<Transfer>, DecodeError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    decode_transfers(body)
}

/// A result code: its number (binary) and its name (JSON).
pub trait ResultCode: Copy + Eq {
    const CREATED: Self;
    fn number(self) -> u32;
    fn name(self) -> &'static str;
    fn from_number(number: u32) -> Option<Self>;
}

impl ResultCode for CreateAccountResult {
    const CREATED: Self = CreateAccountResult::Created;
    fn number(self) -> u32 {
        self as u32
    }
    fn name(self) -> &'static str {
        self.code()
    }
    fn from_number(number: u32) -> Option<Self> {
        CreateAccountResult::from_u32(number)
    }
}

impl ResultCode for CreateTransferResult {
    const CREATED: Self = CreateTransferResult::Created;
    fn number(self) -> u32 {
        self as u32
    }
    fn name(self) -> &'static str {
        self.code()
    }
    fn from_number(number: u32) -> Option<Self> {
        CreateTransferResult::from_u32(number)
    }
}

/// A create's answer: the events not created, as `(index, code)` pairs in index order.
pub fn encode_results<R: ResultCode>(results: &[R]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, result) in results.iter().enumerate() {
        if *result != R::CREATED {
            out.extend_from_slice(&(index as u32).to_le_bytes());
            out.extend_from_slice(&result.number().to_le_bytes());
        }
    }
    out
}

/// A create's answer read back: one result per event of a batch of `events`.
pub fn decode_results<R: ResultCode>(body: &[u8], events: usize) -> Result<Vec<R>, DecodeError> {
    let mut results = vec![R::CREATED; events];
    if body.is_empty() {
        return Ok(results);
    }
    let mut next = 0usize;
    for (n, pair) in items(body, RESULT_SIZE, events.max(1))?.enumerate() {
        let offset = n * RESULT_SIZE;
        let index = u32::from_le_bytes(pair[..4].try_into().expect("4 bytes")) as usize;
        let number = u32::from_le_bytes(pair[4..].try_into().expect("4 bytes"));
        if index < next || index >= events {
            return Err(DecodeError::ResultIndex { offset });
        }
        let code = R::from_number(number).ok_or(DecodeError::UnknownResult {
            offset: offset + 4,
            code: number,
        })?;
        if code == R::CREATED {
            return Err(DecodeError::UnknownResult {
                offset: offset + 4,
                code: number,
            });
        }
        results[index] = code;
        next = index + 1;
    }
    Ok(results)
}

#[cfg(test)]
mod tests;
