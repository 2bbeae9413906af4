use super::*;
use proptest::prelude::*;

/// Bytes written field by field at TigerBeetle's offsets, independently of the encoder.
fn bytes(fields: &[(usize, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; RECORD_SIZE];
    for (at, field) in fields {
        out[*at..*at + field.len()].copy_from_slice(field);
    }
    out
}

fn account() -> Account {
    Account {
        id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        debits_pending: 11,
        debits_posted: 12,
        credits_pending: 13,
        credits_posted: u128::MAX - 1,
        user_data_128: 15,
        user_data_64: 16,
        user_data_32: 17,
        ledger: 18,
        code: 19,
        flags: AccountFlags(0b1010),
        timestamp: 20,
    }
}

fn transfer() -> Transfer {
    Transfer {
        id: 1,
        debit_account_id: 2,
        credit_account_id: 3,
        amount: u128::MAX,
        pending_id: 5,
        user_data_128: 6,
        user_data_64: 7,
        user_data_32: 8,
        timeout: 9,
        ledger: 10,
        code: 11,
        flags: TransferFlags(0b10_0001),
        timestamp: 12,
    }
}

#[test]
fn an_account_is_tigerbeetles_layout() {
    let expected = bytes(&[
        (
            0,
            &0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128.to_le_bytes(),
        ),
        (16, &11u128.to_le_bytes()),
        (32, &12u128.to_le_bytes()),
        (48, &13u128.to_le_bytes()),
        (64, &(u128::MAX - 1).to_le_bytes()),
        (80, &15u128.to_le_bytes()),
        (96, &16u64.to_le_bytes()),
        (104, &17u32.to_le_bytes()),
        (112, &18u32.to_le_bytes()),
        (116, &19u16.to_le_bytes()),
        (118, &0b1010u16.to_le_bytes()),
        (120, &20u64.to_le_bytes()),
    ]);
    assert_eq!(expected[0], 0x10, "little-endian");
    assert_eq!(encode_account(&account()).to_vec(), expected);
    assert_eq!(decode_accounts(&expected).unwrap(), vec![account()]);
}

#[test]
fn a_transfer_is_tigerbeetles_layout() {
    let expected = bytes(&[
        (0, &1u128.to_le_bytes()),
        (16, &2u128.to_le_bytes()),
        (32, &3u128.to_le_bytes()),
        (48, &u128::MAX.to_le_bytes()),
        (64, &5u128.to_le_bytes()),
        (80, &6u128.to_le_bytes()),
        (96, &7u64.to_le_bytes()),
        (104, &8u32.to_le_bytes()),
        (108, &9u32.to_le_bytes()),
        (112, &10u32.to_le_bytes()),
        (116, &11u16.to_le_bytes()),
        (118, &0b10_0001u16.to_le_bytes()),
        (120, &12u64.to_le_bytes()),
    ]);
    assert_eq!(encode_transfer(&transfer()).to_vec(), expected);
    assert_eq!(decode_transfers(&expected).unwrap(), vec![transfer()]);
}

#[test]
fn ids_and_results_have_their_layouts() {
    let ids = encode_ids(&[1, u128::MAX]);
    let mut expected = 1u128.to_le_bytes().to_vec();
    expected.extend_from_slice(&[0xff; 16]);
    assert_eq!(ids, expected);
    assert_eq!(decode_ids(&ids).unwrap(), vec![1, u128::MAX]);

    let results = [
        CreateTransferResult::Created,
        CreateTransferResult::Exists,
        CreateTransferResult::Created,
        CreateTransferResult::LinkedEventFailed,
    ];
    let encoded = encode_results(&results);
    let exists = CreateTransferResult::Exists as u32;
    let mut expected = 1u32.to_le_bytes().to_vec();
    expected.extend_from_slice(&exists.to_le_bytes());
    expected.extend_from_slice(&3u32.to_le_bytes());
    expected.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(encoded, expected, "only the events not created");
    assert_eq!(
        decode_results::<CreateTransferResult>(&encoded, 4).unwrap(),
        results
    );
    assert_eq!(
        decode_results::<CreateAccountResult>(&[], 3).unwrap(),
        vec![CreateAccountResult::Created; 3]
    );
}

#[test]
fn malformed_bodies_name_their_offset() {
    assert_eq!(decode_transfers(&[]), Err(DecodeError::Empty));
    let two = encode_transfers(&[transfer(), transfer()]);
    let cut = decode_transfers(&two[..200]).unwrap_err();
    assert_eq!(cut.offset(), 128);
    assert!(cut
        .to_string()
        .starts_with("at byte 128: the body is 200 bytes"));
    let too_many = vec![0u8; (BATCH_EVENTS_MAX + 1) * RECORD_SIZE];
    assert_eq!(
        decode_transfers(&too_many).unwrap_err().offset(),
        BATCH_EVENTS_MAX * RECORD_SIZE
    );
    let mut reserved = encode_accounts(&[account(), account()]);
    reserved[128 + 109] = 1;
    assert_eq!(
        decode_accounts(&reserved),
        Err(DecodeError::Reserved { offset: 128 + 108 })
    );
    assert_eq!(decode_ids(&[0; 17]).unwrap_err().offset(), 16);
    // Results out of order, past the batch, unknown, or "created" (never listed).
    let pair = |index: u32, code: u32| [index.to_le_bytes(), code.to_le_bytes()].concat();
    let unordered = [pair(2, 20), pair(1, 20)].concat();
    assert_eq!(
        decode_results::<CreateTransferResult>(&unordered, 4),
        Err(DecodeError::ResultIndex { offset: 8 })
    );
    assert!(decode_results::<CreateTransferResult>(&pair(4, 20), 4).is_err());
    assert!(decode_results::<CreateTransferResult>(&pair(0, 9999), 4).is_err());
    assert!(decode_results::<CreateTransferResult>(&pair(0, 0), 4).is_err());
}

fn any_account() -> impl Strategy<Value = Account> {
    (any::<[u128; 6]>(), any::<(u64, u32, u32, u16, u16, u64)>()).prop_map(|(w, n)| Account {
        id: w[0],
        debits_pending: w[1],
        debits_posted: w[2],
        credits_pending: w[3],
        credits_posted: w[4],
        user_data_128: w[5],
        user_data_64: n.0,
        user_data_32: n.1,
        ledger: n.2,
        code: n.3,
        flags: AccountFlags(n.4),
        timestamp: n.5,
    })
}

fn any_transfer() -> impl Strategy<Value = Transfer> {
    (
        any::<[u128; 6]>(),
        any::<(u64, u32, u32, u32, u16, u16, u64)>(),
    )
        .prop_map(|(w, n)| Transfer {
            id: w[0],
            debit_account_id: w[1],
            credit_account_id: w[2],
            amount: w[3],
            pending_id: w[4],
            user_data_128: w[5],
            user_data_64: n.0,
            user_data_32: n.1,
            timeout: n.2,
            ledger: n.3,
            code: n.4,
            flags: TransferFlags(n.5),
            timestamp: n.6,
        })
}

proptest! {
    #[test]
    fn records_round_trip(
        accounts in proptest::collection::vec(any_account(), 1..20),
        transfers in proptest::collection::vec(any_transfer(), 1..20),
    ) {
        prop_assert_eq!(decode_accounts(&encode_accounts(&accounts)).unwrap(), accounts);
        prop_assert_eq!(decode_transfers(&encode_transfers(&transfers)).unwrap(), transfers);
    }

    /// Whatever the bytes: an answer or an error at an offset within them, never a panic.
    #[test]
    fn any_body_is_a_batch_or_an_error_within_it(body in proptest::collection::vec(any::<u8>(), 0..1200), events in 0usize..20) {
        for error in [
            decode_accounts(&body).err(),
            decode_transfers(&body).err(),
            decode_ids(&body).err(),
            decode_results::<CreateTransferResult>(&body, events).err(),
            decode_results::<CreateAccountResult>(&body, events).err(),
        ].into_iter().flatten() {
            prop_assert!(error.offset() <= body.len(), "{error}");
        }
    }
}
