//! The partition that owns an account. Part of the stored data's contract: the partition
//! count is fixed when the data is created and this function never changes (the tests pin
//! known values), or accounts would move between partitions' logs.

use kizo_ledger::routing::mix64;

use crate::ClusterError;

/// The most partitions a cluster may have.
pub const PARTITIONS_MAX: u32 = 4096;

/// A partition count, 1 to [`PARTITIONS_MAX`]; 1 is a single node's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionCount(u32);

impl PartitionCount {
    pub const ONE: PartitionCount = PartitionCount(1);

    pub fn new(count: u32) -> Result<Self, ClusterError> {
        if (1..=PARTITIONS_MAX).contains(&count) {
            Ok(PartitionCount(count))
        } else {
            Err(ClusterError::PartitionCount)
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Every partition, in order.
    pub fn all(self) -> impl Iterator<Item = u32> {
        0..self.0
    }
}

/// Salts the account's hash, so that the partition of an account says nothing about its
/// shard inside the node (which hashes the same id without it): a partition's accounts
/// spread over all of a node's shards.
const PARTITION_SALT: u64 = 0x7061_7274_6974_696f; // "partitio"

/// The partition of `account` among `count`: SplitMix64's finalizer over the id's halves
/// xor-folded and salted, mapped onto `0..count` by multiply-and-shift.
pub fn partition_of(account: u128, count: PartitionCount) -> u32 {
    let folded = (account as u64) ^ ((account >> 64) as u64);
    ((u128::from(mix64(folded ^ PARTITION_SALT)) * u128::from(count.0)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizo_ledger::routing::shard_of;

    #[test]
    fn the_mapping_is_stable() {
        // The contract: if this test fails, existing accounts would change partitions.
        let eight = PartitionCount::new(8).unwrap();
        let got: Vec<u32> = [1u128, 2, 3, u128::MAX - 1, 1 << 64]
            .iter()
            .map(|&id| partition_of(id, eight))
            .collect();
        assert_eq!(got, vec![3, 5, 2, 3, 3]);
        assert!((0..1000).all(|id| partition_of(id, PartitionCount::ONE) == 0));
    }

    #[test]
    fn counts_are_bounded() {
        assert!(PartitionCount::new(0).is_err());
        assert!(PartitionCount::new(PARTITIONS_MAX + 1).is_err());
        assert_eq!(
            PartitionCount::new(PARTITIONS_MAX).unwrap().all().count(),
            4096
        );
    }

    #[test]
    fn a_partitions_accounts_spread_over_every_shard() {
        let partitions = PartitionCount::new(4).unwrap();
        let shards = 8;
        let mut per_shard = vec![0u32; shards];
        let mut in_partition = 0;
        for id in 1..200_000u128 {
            if partition_of(id, partitions) == 0 {
                in_partition += 1;
                per_shard[shard_of(id, shards)] += 1;
            }
        }
        let fair = in_partition / shards as u32;
        for count in per_shard {
            assert!(
                count > fair * 9 / 10 && count < fair * 11 / 10,
                "{count} vs {fair}"
            );
        }
        // And partitions are even too.
        let fair = 200_000 / 4;
        assert!(in_partition > fair * 9 / 10 && in_partition < fair * 11 / 10);
    }
}
