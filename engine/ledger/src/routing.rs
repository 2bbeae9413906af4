//! Which shard owns an id. The function is part of the on-disk contract: changing it re-shards
//! every ledger, so it is fixed here, tested against known values, and never `DefaultHasher`
//! (whose output is not stable across Rust versions).

/// The shard that owns `id` (an account id, or a transfer id for the transfer's own record)
/// among `shard_count` shards: SplitMix64's finalizer over the two 64-bit halves xor-folded,
/// mapped onto `0..shard_count` by multiply-and-shift (Lemire's reduction; no division).
#[inline]
pub fn shard_of(id: u128, shard_count: usize) -> usize {
    debug_assert!(shard_count > 0);
    let folded = (id as u64) ^ ((id >> 64) as u64);
    ((u128::from(mix64(folded)) * shard_count as u128) >> 64) as usize
}

/// SplitMix64's output function: a bijective avalanche of 64 bits. The workspace's one 64-bit
/// mixer: routing, the settlements' retry jitter, and the seeded generators of the mock bank
/// and the simulator all use it. Part of routing's contract: never change it.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping_is_stable() {
        // These values are the contract: if this test fails, existing data would move shards.
        let known = [
            (1u128, 4usize),
            (2, 4),
            (3, 4),
            (u128::MAX - 1, 4),
            (1 << 64, 4),
        ];
        let got: Vec<usize> = known.iter().map(|&(id, n)| shard_of(id, n)).collect();
        assert_eq!(got, vec![1, 3, 0, 1, 1]);
        assert_eq!(shard_of(12345, 1), 0);
    }

    #[test]
    fn sequential_ids_spread_evenly() {
        let shards = 8;
        let mut counts = vec![0u32; shards];
        for id in 1..=80_000u128 {
            counts[shard_of(id, shards)] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{count}");
        }
    }
}
