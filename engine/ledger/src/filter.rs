//! The membership filter of every transfer id a shard ever committed (created or failed): an id
//! it rules out is new, whatever left memory; for an id it cannot rule out, the round fetches
//! the stored transfer before deciding.
//!
//! A split-block Bloom filter (the layout Apache Parquet specifies): each id sets one bit in
//! each of the eight 32-bit words of one 256-bit block, so a test or an insert touches one
//! cache line. It is written here rather than taken from a crate because its bits are part of
//! the snapshot format: they must mean the same thing in every build, forever.
//!
//! A filter cannot grow in place, and the number of ids grows without end: the filter is a list
//! of **generations**, each sized for twice the ids of the one before at [`BITS_PER_ID`] bits
//! each. Inserts go to the newest; a test asks every generation. A full generation at 16 bits
//! per id answers "maybe" for about 0.1% of new ids (measured by the test below), so the rate
//! over all generations is at most that times their count (about 0.6% at 25 million ids), and
//! the memory is 2 bytes per id the filled generations hold, plus the newest one's room.

use crate::routing::mix64;

/// Bits of filter per id a generation is sized for.
pub const BITS_PER_ID: u64 = 16;

/// Ids the first generation is sized for (8 KiB): small ledgers stay small, and the small
/// generations of a large one stay in cache.
const FIRST_CAPACITY: u64 = 1 << 12;

/// The largest generation: 2^31 ids (4 GiB); later ones stay at this size.
const CAPACITY_MAX: u64 = 1 << 31;

const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

type Block = [u32; 8];

/// One fixed-size split-block Bloom filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// Ids it is sized for.
    pub capacity: u64,
    /// Ids inserted.
    pub ids: u64,
    pub blocks: Vec<Block>,
}

impl Generation {
    fn with_capacity(capacity: u64) -> Self {
        let blocks = (capacity * BITS_PER_ID / 256).max(1) as usize;
        Self {
            capacity,
            ids: 0,
            blocks: vec![[0; 8]; blocks],
        }
    }

    #[inline]
    fn block(&self, hash: u64) -> usize {
        (((hash >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    #[inline]
    fn mask(hash: u64) -> Block {
        let x = hash as u32;
        std::array::from_fn(|i| 1u32 << (x.wrapping_mul(SALT[i]) >> 27))
    }

    #[inline]
    fn insert(&mut self, hash: u64) {
        let at = self.block(hash);
        let block = &mut self.blocks[at];
        for (word, bit) in block.iter_mut().zip(Self::mask(hash)) {
            *word |= bit;
        }
        self.ids += 1;
    }

    #[inline]
    fn may_contain(&self, hash: u64) -> bool {
        let block = &self.blocks[self.block(hash)];
        block
            .iter()
            .zip(Self::mask(hash))
            .all(|(word, bit)| word & bit != 0)
    }

    /// Whether the block count is the one its capacity makes: a generation read from a
    /// snapshot is checked before use.
    pub fn is_well_formed(&self) -> bool {
        (1..=CAPACITY_MAX).contains(&self.capacity)
            && self.blocks.len() as u64 == (self.capacity * BITS_PER_ID / 256).max(1)
    }
}

/// Every id ever inserted, as a list of generations; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdFilter {
    generations: Vec<Generation>,
    /// For the simulator only: answer "maybe" for this share (per million) of the ids that were
    /// never inserted too, so that the fetch path runs all the time. Never set in production.
    forced_maybe_per_million: u32,
}

impl IdFilter {
    pub fn from_generations(generations: Vec<Generation>) -> Self {
        Self {
            generations,
            forced_maybe_per_million: 0,
        }
    }

    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// Makes the filter answer "maybe" for about `per_million` in a million new ids besides its
    /// own false positives (the simulator's fault; never in production).
    pub fn force_false_positives(&mut self, per_million: u32) {
        self.forced_maybe_per_million = per_million.min(1_000_000);
    }

    /// The 64-bit hash the filter takes of an id: keyed apart from shard routing's, whose low
    /// bits are the same for every id of one shard.
    #[inline]
    fn hash(id: u128) -> u64 {
        let low = id as u64;
        let high = (id >> 64) as u64;
        mix64(mix64(low ^ 0x9e37_79b9_7f4a_7c15) ^ high.rotate_left(29))
    }

    pub fn insert(&mut self, id: u128) {
        let full = self.generations.last().is_none_or(|g| g.ids >= g.capacity);
        if full {
            let capacity = self
                .generations
                .last()
                .map_or(FIRST_CAPACITY, |g| (g.capacity * 2).min(CAPACITY_MAX));
            self.generations.push(Generation::with_capacity(capacity));
        }
        let hash = Self::hash(id);
        self.generations
            .last_mut()
            .expect("a generation with room")
            .insert(hash);
    }

    /// False: `id` was never inserted. True: it may have been.
    #[inline]
    pub fn may_contain(&self, id: u128) -> bool {
        let hash = Self::hash(id);
        if self.forced_maybe_per_million != 0
            && mix64(hash) % 1_000_000 < u64::from(self.forced_maybe_per_million)
        {
            return true;
        }
        self.generations.iter().any(|g| g.may_contain(hash))
    }

    /// Ids inserted.
    pub fn len(&self) -> u64 {
        self.generations.iter().map(|g| g.ids).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory the bits take.
    pub fn bytes(&self) -> u64 {
        self.generations
            .iter()
            .map(|g| g.blocks.len() as u64 * 32)
            .sum()
    }

    /// Adds `other`'s ids to this filter (a shard count changed: a shard takes the filters of
    /// every old shard). Generations of one size (every shard grows through the same sizes)
    /// are joined bit by bit, so that merging never adds memory however often the count
    /// changes; a joined generation holds the ids of both at the same bits (more false
    /// positives) and counts them all, so it fills sooner.
    pub fn merge(&mut self, other: &IdFilter) {
        for theirs in &other.generations {
            match self
                .generations
                .iter_mut()
                .find(|g| g.capacity == theirs.capacity && g.blocks.len() == theirs.blocks.len())
            {
                Some(ours) => {
                    for (a, b) in ours.blocks.iter_mut().zip(&theirs.blocks) {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x |= y;
                        }
                    }
                    ours.ids = ours.ids.saturating_add(theirs.ids);
                }
                None => self.generations.push(theirs.clone()),
            }
        }
        self.generations.sort_by_key(|g| g.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inserted_id_is_always_found_through_every_generation() {
        let mut filter = IdFilter::default();
        let ids: Vec<u128> = (1..=300_000u128).map(|i| i * 0x1_0000_0001).collect();
        for &id in &ids {
            filter.insert(id);
        }
        assert!(filter.generations().len() >= 3, "it grew");
        assert!(ids.iter().all(|&id| filter.may_contain(id)));
        assert_eq!(filter.len(), 300_000);
    }

    /// The rate this module states: a full generation says "maybe" for about 0.1% of new ids.
    #[test]
    fn a_full_generation_rarely_mistakes_a_new_id() {
        let mut filter = IdFilter::default();
        for id in 0..FIRST_CAPACITY as u128 {
            filter.insert(id << 64 | 7);
        }
        assert_eq!(filter.generations().len(), 1);
        let tries = 1_000_000u128;
        let mistaken = (0..tries)
            .filter(|&i| filter.may_contain((i + 1) << 80 | 3))
            .count();
        let rate = mistaken as f64 / tries as f64;
        assert!(rate < 0.002, "false positive rate {rate}");
        assert_eq!(filter.bytes(), FIRST_CAPACITY * BITS_PER_ID / 8);
    }

    #[test]
    fn merged_filters_contain_both_and_forced_maybes_come_on_request() {
        let (mut a, mut b) = (IdFilter::default(), IdFilter::default());
        (1..1000u128).for_each(|id| a.insert(id));
        (5000..6000u128).for_each(|id| b.insert(id));
        a.merge(&b);
        let bytes = a.bytes();
        a.merge(&b);
        assert_eq!(a.bytes(), bytes, "merging again adds no memory");
        a.insert(9_999_999);
        assert!((1..1000u128).chain(5000..6000).all(|id| a.may_contain(id)));
        assert!(a.may_contain(9_999_999));
        let maybes = |f: &IdFilter| {
            (1u128 << 100..(1 << 100) + 10_000)
                .filter(|&id| f.may_contain(id))
                .count()
        };
        assert!(maybes(&a) < 100);
        a.force_false_positives(500_000);
        let forced = maybes(&a);
        assert!((4_000..6_000).contains(&forced), "{forced}");
    }
}
