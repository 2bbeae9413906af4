//! When requests are sent and to whom: the open-loop schedule (intended send times, so that a
//! stall is charged to every request it delayed), a seeded generator, and Zipf-skewed choice.

use std::time::Duration;

/// The intended send time of request `index` at `rate` requests per second, from the start.
/// Latency is measured from this instant, not from when a worker got to it: a server that
/// stalls for a second is charged the second for every request due in it (no coordinated
/// omission).
pub fn intended_at(index: u64, rate: f64) -> Duration {
    assert!(rate > 0.0, "a rate is positive");
    Duration::from_secs_f64(index as f64 / rate)
}

/// xorshift64*: small, fast, and reproducible from a seed; not for secrets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks indexes in `0..n`: uniformly, or by Zipf's law with exponent `s` (rank 0 most often).
#[derive(Clone, Debug)]
pub struct Chooser {
    /// Cumulative weights, normalized to end at 1; empty for uniform.
    cdf: Vec<f64>,
    n: usize,
}

impl Chooser {
    pub fn new(n: usize, skew: f64) -> Chooser {
        assert!(n > 0, "at least one to choose from");
        if skew <= 0.0 {
            return Chooser { cdf: Vec::new(), n };
        }
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(skew);
            cdf.push(total);
        }
        for weight in &mut cdf {
            *weight /= total;
        }
        Chooser { cdf, n }
    }

    pub fn pick(&self, rng: &mut Rng) -> usize {
        if self.cdf.is_empty() {
            return rng.below(self.n);
        }
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.n - 1)
    }

    /// Two different indexes (n ≥ 2).
    pub fn pair(&self, rng: &mut Rng) -> (usize, usize) {
        assert!(self.n >= 2, "a pair needs two");
        let a = self.pick(rng);
        loop {
            let b = self.pick(rng);
            if b != a {
                return (a, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_loop_schedule_is_evenly_spaced_from_the_start() {
        assert_eq!(intended_at(0, 1000.0), Duration::ZERO);
        assert_eq!(intended_at(1, 1000.0), Duration::from_millis(1));
        assert_eq!(intended_at(2500, 1000.0), Duration::from_millis(2500));
        assert_eq!(intended_at(3, 2.0), Duration::from_millis(1500));
    }

    #[test]
    fn the_generator_replays_from_its_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first[0], Rng::new(8).next_u64());
        let mut rng = Rng::new(1);
        assert!((0..10_000).all(|_| rng.below(7) < 7));
    }

    #[test]
    fn zipf_favours_the_first_ranks_and_uniform_does_not() {
        let mut rng = Rng::new(42);
        let zipf = Chooser::new(1000, 1.0);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.pick(&mut rng)] += 1;
        }
        // Rank 1 has weight 1/H(1000) ≈ 13.4%; rank 2 half of that.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert!((5_800..7_600).contains(&counts[1]), "{}", counts[1]);
        let uniform = Chooser::new(1000, 0.0);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[uniform.pick(&mut rng)] += 1;
        }
        assert!(counts.iter().all(|&c| (40..170).contains(&c)));
        let (a, b) = zipf.pair(&mut rng);
        assert_ne!(a, b);
    }
}
