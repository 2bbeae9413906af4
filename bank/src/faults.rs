//! Fault injection: how late (a least latency plus uniform jitter, and a share of slow calls),
//! how often wrong, how often declined. Rates are shares of calls
//! (0 to 1). The defaults are the seed project's mock bank: 5% of calls slow (5 s), 2% errors,
//! about 7% declines; plus, here, answers that come too late after the work is done, duplicate
//! callbacks, and an outage switch.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Every call's least latency, in milliseconds.
    #[arg(long, env = "KIZO_BANK_LATENCY_MS", default_value_t = 20)]
    pub latency_ms: u64,
    /// Up to this much more, uniformly, in milliseconds.
    #[arg(long, env = "KIZO_BANK_LATENCY_JITTER_MS", default_value_t = 30)]
    pub latency_jitter_ms: u64,
    /// Share of calls that take `slow_ms` instead.
    #[arg(long, env = "KIZO_BANK_SLOW_RATE", default_value_t = 0.05)]
    pub slow_rate: f64,
    #[arg(long, env = "KIZO_BANK_SLOW_MS", default_value_t = 5_000)]
    pub slow_ms: u64,
    /// Share of calls answered 500 before any work is done.
    #[arg(long, env = "KIZO_BANK_ERROR_RATE", default_value_t = 0.02)]
    pub error_rate: f64,
    /// Share of calls whose work is done but whose answer comes `timeout_ms` late.
    #[arg(long, env = "KIZO_BANK_TIMEOUT_RATE", default_value_t = 0.02)]
    pub timeout_rate: f64,
    #[arg(long, env = "KIZO_BANK_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Share of new payouts and collections declined.
    #[arg(long, env = "KIZO_BANK_DECLINE_RATE", default_value_t = 0.07)]
    pub decline_rate: f64,
    /// Share of callbacks sent twice.
    #[arg(
        long,
        env = "KIZO_BANK_DUPLICATE_CALLBACK_RATE",
        default_value_t = 0.05
    )]
    pub duplicate_callback_rate: f64,
    /// Every call answers 503 at once.
    #[arg(long, env = "KIZO_BANK_OUTAGE")]
    pub outage: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 20,
            latency_jitter_ms: 30,
            slow_rate: 0.05,
            slow_ms: 5_000,
            error_rate: 0.02,
            timeout_rate: 0.02,
            timeout_ms: 10_000,
            decline_rate: 0.07,
            duplicate_callback_rate: 0.05,
            outage: false,
        }
    }
}

/// What happens to one call.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    pub outage: bool,
    pub delay_ms: u64,
    /// Answer 500 without doing the work.
    pub error: bool,
    /// Do the work, then wait this long before answering.
    pub late_ms: u64,
    pub decline: bool,
    pub duplicate_callback: bool,
}

/// A fault setting out of its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultsError {
    #[error("{0} must be between 0 and 1")]
    Rate(&'static str),
    #[error("{0} must be at most 600000")]
    Delay(&'static str),
}

impl Faults {
    /// No faults at all: the in-process bank of the quick start.
    pub fn none() -> Faults {
        Faults {
            latency_ms: 0,
            latency_jitter_ms: 0,
            slow_rate: 0.0,
            slow_ms: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_ms: 0,
            decline_rate: 0.0,
            duplicate_callback_rate: 0.0,
            outage: false,
        }
    }

    pub fn check(&self) -> Result<(), FaultsError> {
        for (name, rate) in [
            ("slow_rate", self.slow_rate),
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
            ("decline_rate", self.decline_rate),
            ("duplicate_callback_rate", self.duplicate_callback_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(FaultsError::Rate(name));
            }
        }
        for (name, ms) in [
            ("latency_ms", self.latency_ms),
            ("latency_jitter_ms", self.latency_jitter_ms),
            ("slow_ms", self.slow_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if ms > 600_000 {
                return Err(FaultsError::Delay(name));
            }
        }
        Ok(())
    }

    /// Draws one call's fate; `uniform` gives numbers in [0, 1).
    pub fn plan(&self, mut uniform: impl FnMut() -> f64) -> Plan {
        let jitter = (uniform() * (self.latency_jitter_ms + 1) as f64) as u64;
        let mut roll = |rate: f64| uniform() < rate;
        Plan {
            outage: self.outage,
            delay_ms: if roll(self.slow_rate) {
                self.slow_ms
            } else {
                self.latency_ms + jitter.min(self.latency_jitter_ms)
            },
            error: roll(self.error_rate),
            late_ms: if roll(self.timeout_rate) {
                self.timeout_ms
            } else {
                0
            },
            decline: roll(self.decline_rate),
            duplicate_callback: roll(self.duplicate_callback_rate),
        }
    }
}

/// splitmix64: the bank's own small generator, seeded by `--seed` (or the clock).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        kizo_engine::routing::mix64(self.0)
    }

    /// In [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_out_near_their_setting() {
        let faults = Faults::default();
        let mut rng = Rng::new(1);
        let plans: Vec<Plan> = (0..100_000)
            .map(|_| faults.plan(|| rng.uniform()))
            .collect();
        let share = |f: fn(&Plan) -> bool| plans.iter().filter(|p| f(p)).count() as f64 / 100_000.0;
        assert!((share(|p| p.error) - 0.02).abs() < 0.005);
        assert!((share(|p| p.decline) - 0.07).abs() < 0.005);
        assert!((share(|p| p.delay_ms == 5_000) - 0.05).abs() < 0.005);
        assert!(Faults::none().plan(|| rng.uniform()) == Plan::default());
    }

    #[test]
    fn bad_rates_are_refused() {
        let faults = Faults {
            error_rate: 1.5,
            ..Faults::default()
        };
        assert!(faults.check().is_err());
        assert!(Faults::default().check().is_ok());
    }
}
