//! What a run measured: per request kind, a latency histogram (`hdrhistogram`, microseconds,
//! 3 significant digits, up to 10 minutes), successes, and errors by code; per second of the
//! run, a coarser histogram of every request (the report's latency over time).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency recorded exactly; longer ones are recorded as this.
const LATENCY_MAX_US: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds")
}

/// 2 significant digits (1%): enough for a plot or a progress line, and a seventh of the
/// memory. Every worker starts one per second of the run: at 3 digits (172 KB of fresh,
/// zeroed pages each) that was a tenth of the generator's time, taken from the server on the
/// same cores.
pub fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid bounds")
}

/// `latency` in whole microseconds, within what the histograms hold.
pub fn micros(latency: Duration) -> u64 {
    (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US)
}

#[derive(Clone, Debug)]
pub struct Series {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            latency: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Series {
    pub fn count(&self) -> u64 {
        self.ok + self.errors.values().sum::<u64>()
    }
}

/// Every request of a run, by kind (`transfer`, `login`, ...), and by second.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub kinds: BTreeMap<&'static str, Series>,
    pub per_second: Vec<Histogram<u64>>,
}

impl Recorder {
    /// Records one request of `kind`, `at` from the start of the run, that took `latency`
    /// (from its intended send time) and succeeded, or failed with `error`.
    pub fn record(
        &mut self,
        kind: &'static str,
        at: Duration,
        latency: Duration,
        error: Option<&str>,
    ) {
        let micros = micros(latency);
        let series = self.kinds.entry(kind).or_default();
        series.latency.record(micros).expect("clamped into range");
        match error {
            None => series.ok += 1,
            Some(code) => *series.errors.entry(code.to_string()).or_default() += 1,
        }
        let second = at.as_secs() as usize;
        while self.per_second.len() <= second {
            self.per_second.push(coarse_histogram());
        }
        self.per_second[second]
            .record(micros)
            .expect("clamped into range");
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (kind, theirs) in &other.kinds {
            let ours = self.kinds.entry(kind).or_default();
            ours.latency.add(&theirs.latency).expect("same bounds");
            ours.ok += theirs.ok;
            for (code, n) in &theirs.errors {
                *ours.errors.entry(code.clone()).or_default() += n;
            }
        }
        for (second, theirs) in other.per_second.iter().enumerate() {
            while self.per_second.len() <= second {
                self.per_second.push(coarse_histogram());
            }
            self.per_second[second].add(theirs).expect("same bounds");
        }
    }

    /// The summary of each kind over a run of `elapsed`.
    pub fn summaries(&self, elapsed: Duration) -> Vec<Summary> {
        self.kinds
            .iter()
            .map(|(kind, s)| Summary::of(kind, s, elapsed))
            .collect()
    }
}

/// One kind's figures, as printed and as `--json` writes them. Latencies in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub kind: String,
    pub count: u64,
    pub per_second: f64,
    /// Percent of requests that succeeded.
    pub success: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: BTreeMap<String, u64>,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Summary {
    fn of(kind: &str, s: &Series, elapsed: Duration) -> Summary {
        let count = s.count();
        let h = &s.latency;
        Summary {
            kind: kind.to_string(),
            count,
            per_second: count as f64 / elapsed.as_secs_f64().max(1e-9),
            success: if count == 0 {
                100.0
            } else {
                s.ok as f64 * 100.0 / count as f64
            },
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            errors: s.errors.clone(),
        }
    }
}

/// The end-of-run table: one line per kind, then errors by code.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "request",
        "count",
        "per second",
        "success",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>11.0} {:>8.2}% {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.kind,
            s.count,
            s.per_second,
            s.success,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.p999_ms,
            s.max_ms
        );
    }
    for s in summaries {
        for (code, n) in &s.errors {
            let _ = writeln!(out, "  {} errors: {code} × {n}", s.kind);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_counts_and_errors_add_up() {
        let mut a = Recorder::default();
        for ms in 1..=100u64 {
            a.record(
                "transfer",
                Duration::from_millis(ms * 10),
                Duration::from_millis(ms),
                None,
            );
        }
        let mut b = Recorder::default();
        b.record(
            "transfer",
            Duration::ZERO,
            Duration::from_secs(2),
            Some("timeout"),
        );
        b.record(
            "login",
            Duration::from_secs(3),
            Duration::from_millis(5),
            None,
        );
        a.merge(&b);
        let summaries = a.summaries(Duration::from_secs(2));
        let login = &summaries[0];
        let transfer = &summaries[1];
        assert_eq!((login.kind.as_str(), login.count), ("login", 1));
        assert_eq!(transfer.count, 101);
        assert!((transfer.per_second - 50.5).abs() < 1e-9);
        assert!((transfer.success - 100.0 * 100.0 / 101.0).abs() < 1e-9);
        assert!((transfer.p50_ms - 51.0).abs() < 0.1, "{}", transfer.p50_ms);
        assert!((transfer.p99_ms - 100.0).abs() < 0.1, "{}", transfer.p99_ms);
        assert!(
            (transfer.max_ms - 2000.0).abs() < 2.0,
            "{}",
            transfer.max_ms
        );
        assert_eq!(transfer.errors["timeout"], 1);
        // Seconds 0..=3 have histograms, each holding the requests sent in it.
        let per_second: Vec<u64> = a.per_second.iter().map(|h| h.len()).collect();
        assert_eq!(per_second, [100, 1, 0, 1]);
        let text = table(&summaries);
        assert!(text.contains("transfer errors: timeout × 1"), "{text}");
    }

    #[test]
    fn latencies_beyond_the_range_are_kept_at_its_edge() {
        let mut r = Recorder::default();
        r.record("x", Duration::ZERO, Duration::from_secs(3600), None);
        r.record("x", Duration::ZERO, Duration::ZERO, None);
        let s = &r.summaries(Duration::from_secs(1))[0];
        assert!(s.max_ms >= 599_000.0 && s.p50_ms <= 0.002, "{s:?}");
    }
}
