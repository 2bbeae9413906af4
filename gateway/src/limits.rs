//! Rate limits on the routes that create accounts and sessions (signup, login, refresh): per
//! client address, and per email from one address, so that neither one address nor one
//! target can be hammered, and a stranger spending an email's attempts from elsewhere never
//! keeps its owner out. Over the limit: `429 rate_limited` with `Retry-After`.
//!
//! Failed sign-ins also slow down what follows them: after a few failures for one email from
//! one address ([`FREE_FAILURES_PER_EMAIL`]), or many from one address whatever the email
//! ([`FREE_FAILURES_PER_ADDRESS`]), each further attempt must wait twice as long as the last,
//! up to [`FAILURE_DELAY_MAX_MS`]; a success from that address ends its wait. The owner,
//! signing in from their own address, is never kept waiting by failures from elsewhere.
//!
//! What strangers send never sizes the limiters' memory: keys are buckets of a keyed digest
//! (an email of any length, or one of the 2^64 addresses of an IPv6 /64, is one bucket), so
//! each limiter holds at most [`BUCKETS`] entries, and unused ones are forgotten.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Requests per minute to the auth routes from one address, and for one email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRates {
    pub per_address: NonZeroU32,
    /// Per email from one client address.
    pub per_email: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxies`); from anybody
    /// else the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// History, dashboard, search and CSV reads per minute by one user (`--reads-per-user`; a
    /// CSV export counts as [`CSV_READ_COST`]).
    pub reads_per_user: NonZeroU32,
}

/// Avatar changes (uploads and removals) one user may make an hour.
pub const AVATAR_CHANGES_PER_HOUR: u32 = 30;

/// What one CSV export counts for against `reads_per_user`: it reads many pages.
pub const CSV_READ_COST: u32 = 20;

impl Default for AuthRates {
    fn default() -> Self {
        Self {
            per_address: NonZeroU32::new(60).expect("non-zero"),
            per_email: NonZeroU32::new(10).expect("non-zero"),
            trusted_proxies: Vec::new(),
            reads_per_user: NonZeroU32::new(600).expect("non-zero"),
        }
    }
}

/// Buckets per limiter: its most entries (a few dozen bytes each). Two keys share a bucket,
/// and so a budget, with a chance of one in this many.
pub const BUCKETS: u32 = 1 << 20;

/// Failed sign-ins for one email from one address before each further one must wait.
pub const FREE_FAILURES_PER_EMAIL: u32 = 3;
/// Failed sign-ins from one address, whatever the emails, before each further one must wait.
pub const FREE_FAILURES_PER_ADDRESS: u32 = 20;
/// The longest wait after failures: it doubles from a second up to this.
pub const FAILURE_DELAY_MAX_MS: u64 = 15 * 60_000;

/// Consecutive failed sign-ins by bucket: how many, and when the last one was.
type Failures = std::sync::Mutex<std::collections::HashMap<u32, (u32, u64)>>;

#[derive(Clone)]
pub struct Limits {
    by_address: Arc<DefaultKeyedRateLimiter<u32>>,
    by_email_and_address: Arc<DefaultKeyedRateLimiter<u32>>,
    reads_by_user: Arc<DefaultKeyedRateLimiter<u32>>,
    avatars_by_user: Arc<DefaultKeyedRateLimiter<u32>>,
    /// Keys are buckets (below [`BUCKETS`]), so each map holds at most that many entries.
    failures_by_address: Arc<Failures>,
    failures_by_email_and_address: Arc<Failures>,
    /// Keys the buckets' digest, so that nobody can aim many keys at one bucket.
    secret: [u8; 16],
    buckets: u32,
    trusted_proxies: Arc<[ipnet::IpNet]>,
}

/// Most `X-Forwarded-For` hops looked at: a chain longer than this is cut at it.
const FORWARDED_HOPS_MAX: usize = 16;

/// A refusal: the caller may try again after this many seconds.
pub struct Limited {
    pub retry_after_seconds: u64,
}

impl From<Limited> for ApiError {
    fn from(limited: Limited) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many attempts; retry in {} s",
                limited.retry_after_seconds
            ),
        )
        .retry_after(limited.retry_after_seconds)
    }
}

/// The part of an address that one client controls: an IPv4 address, or an IPv6 /64 (a
/// single host is commonly given a whole /64). IPv4 mapped into IPv6 counts as IPv4.
fn client_of(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().octets(),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                octets
            }
        },
    }
}

impl Limits {
    pub fn new(rates: AuthRates) -> Limits {
        Self::with_buckets(rates, BUCKETS)
    }

    fn with_buckets(rates: AuthRates, buckets: u32) -> Limits {
        assert!((1..=BUCKETS).contains(&buckets));
        let mut secret = [0u8; 16];
        secret[..8].copy_from_slice(&rand_seed().to_le_bytes());
        secret[8..].copy_from_slice(&rand_seed().rotate_left(32).to_le_bytes());
        Limits {
            by_address: Arc::new(RateLimiter::keyed(Quota::per_minute(rates.per_address))),
            by_email_and_address: Arc::new(RateLimiter::keyed(Quota::per_minute(rates.per_email))),
            reads_by_user: Arc::new(RateLimiter::keyed(
                Quota::per_minute(rates.reads_per_user).allow_burst(
                    rates
                        .reads_per_user
                        .max(NonZeroU32::new(CSV_READ_COST).expect("non-zero")),
                ),
            )),
            avatars_by_user: Arc::new(RateLimiter::keyed(Quota::per_hour(
                NonZeroU32::new(AVATAR_CHANGES_PER_HOUR).expect("non-zero"),
            ))),
            failures_by_address: Arc::default(),
            failures_by_email_and_address: Arc::default(),
            secret,
            buckets,
            trusted_proxies: rates.trusted_proxies.into(),
        }
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
    /// address in `X-Forwarded-For` that is not one (the entries further left are the
    /// client's to write, and so to forge).
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let trusted = |address: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(address));
        if !trusted(&peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev().take(FORWARDED_HOPS_MAX) {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !trusted(&address) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    fn bucket(&self, parts: &[&[u8]]) -> u32 {
        let mut digest = Sha256::new();
        digest.update(self.secret);
        for part in parts {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        let digest = digest.finalize();
        u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]) % self.buckets
    }

    /// Counts one attempt from `address`, about `email` when there is one.
    pub fn check(&self, address: IpAddr, email: Option<&str>) -> Result<(), Limited> {
        let limited = |not_until: governor::NotUntil<_>| Limited {
            retry_after_seconds: not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1),
        };
        let client = client_of(address);
        self.by_address
            .check_key(&self.bucket(&[&client]))
            .map_err(limited)?;
        if let Some(email) = email {
            let email = email.trim().to_lowercase();
            self.by_email_and_address
                .check_key(&self.bucket(&[email.as_bytes(), &client]))
                .map_err(limited)?;
        }
        Ok(())
    }

    /// Counts a read of `cost` by `user_id` (history, dashboard, search, CSV): a user who
    /// reads faster than `reads_per_user` a minute waits, and so does nobody else.
    pub fn read(&self, user_id: &str, cost: u32) -> Result<(), Limited> {
        let bucket = self.bucket(&[b"reads", user_id.as_bytes()]);
        let cost = NonZeroU32::new(cost.max(1)).expect("at least 1");
        match self.reads_by_user.check_key_n(&bucket, cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited {
                retry_after_seconds: not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    .max(1),
            }),
            // More than the burst: never allowed; the caller asked for too much at once.
            Err(_) => Err(Limited {
                retry_after_seconds: 60,
            }),
        }
    }

    /// Counts an avatar change by `user_id`: each one decodes a picture, so a user may make
    /// [`AVATAR_CHANGES_PER_HOUR`] an hour.
    pub fn avatar_change(&self, user_id: &str) -> Result<(), Limited> {
        let bucket = self.bucket(&[b"avatars", user_id.as_bytes()]);
        self.avatars_by_user
            .check_key(&bucket)
            .map_err(|not_until| Limited {
                retry_after_seconds: not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    .max(1),
            })
    }

    /// The buckets of a sign-in's failure counts: its address's, and its email's from it.
    fn failure_buckets(&self, address: IpAddr, email: &str) -> (u32, u32) {
        let client = client_of(address);
        let email = email.trim().to_lowercase();
        (
            self.bucket(&[b"failures", &client]),
            self.bucket(&[b"failures", email.as_bytes(), &client]),
        )
    }

    /// Whether a sign-in for `email` from `address` may be tried at `now_ms`, or must wait
    /// for the failures before it.
    pub fn sign_in_allowed(
        &self,
        address: IpAddr,
        email: &str,
        now_ms: u64,
    ) -> Result<(), Limited> {
        let (by_address, by_email) = self.failure_buckets(address, email);
        let wait = |failures: &Failures, bucket: u32, free: u32| -> u64 {
            let failures = failures.lock().expect("not poisoned");
            match failures.get(&bucket) {
                Some(&(count, last_ms)) if count >= free => {
                    let delay = failure_delay_ms(count - free);
                    (last_ms + delay).saturating_sub(now_ms)
                }
                _ => 0,
            }
        };
        let waits = [
            wait(
                &self.failures_by_address,
                by_address,
                FREE_FAILURES_PER_ADDRESS,
            ),
            wait(
                &self.failures_by_email_and_address,
                by_email,
                FREE_FAILURES_PER_EMAIL,
            ),
        ];
        match waits.into_iter().max().unwrap_or(0) {
            0 => Ok(()),
            ms => Err(Limited {
                retry_after_seconds: ms.div_ceil(1_000),
            }),
        }
    }

    /// Counts a failed sign-in for `email` from `address`.
    pub fn sign_in_failed(&self, address: IpAddr, email: &str, now_ms: u64) {
        let (by_address, by_email) = self.failure_buckets(address, email);
        for (failures, bucket) in [
            (&self.failures_by_address, by_address),
            (&self.failures_by_email_and_address, by_email),
        ] {
            let mut failures = failures.lock().expect("not poisoned");
            let entry = failures.entry(bucket).or_insert((0, now_ms));
            *entry = (entry.0.saturating_add(1), now_ms);
        }
    }

    /// A sign-in for `email` from `address` succeeded: their waits end.
    pub fn sign_in_succeeded(&self, address: IpAddr, email: &str) {
        let (by_address, by_email) = self.failure_buckets(address, email);
        self.failures_by_address
            .lock()
            .expect("not poisoned")
            .remove(&by_address);
        self.failures_by_email_and_address
            .lock()
            .expect("not poisoned")
            .remove(&by_email);
    }

    /// Forgets keys whose limits have fully replenished, and failures whose waits are over
    /// (`now_ms`).
    pub fn shrink(&self, now_ms: u64) {
        self.by_address.retain_recent();
        self.by_email_and_address.retain_recent();
        self.reads_by_user.retain_recent();
        self.avatars_by_user.retain_recent();
        for failures in [
            &self.failures_by_address,
            &self.failures_by_email_and_address,
        ] {
            failures
                .lock()
                .expect("not poisoned")
                .retain(|_, (_, last_ms)| *last_ms + 2 * FAILURE_DELAY_MAX_MS > now_ms);
        }
    }

    /// Entries held, in the limiters and the failure counts (at most 6 × [`BUCKETS`]).
    pub fn entries(&self) -> usize {
        let failures = |f: &Failures| f.lock().expect("not poisoned").len();
        self.by_address.len()
            + self.by_email_and_address.len()
            + self.reads_by_user.len()
            + self.avatars_by_user.len()
            + failures(&self.failures_by_address)
            + failures(&self.failures_by_email_and_address)
    }
}

/// The wait after `past_free` failures beyond the free ones: a second, doubling, at most
/// [`FAILURE_DELAY_MAX_MS`].
fn failure_delay_ms(past_free: u32) -> u64 {
    (1_000u64 << past_free.min(20)).min(FAILURE_DELAY_MAX_MS)
}

/// A seed from the standard library's per-process random hasher keys (no extra dependency).
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6b69_7a6f);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_make_the_next_wait_longer_and_never_lock_out_another_address() {
        let limits = Limits::new(AuthRates::default());
        let (attacker, owner): (IpAddr, IpAddr) = (
            "203.0.113.9".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        );
        let mut now = 1_000_000;
        for _ in 0..FREE_FAILURES_PER_EMAIL {
            assert!(limits
                .sign_in_allowed(attacker, "ada@example.com", now)
                .is_ok());
            limits.sign_in_failed(attacker, "ada@example.com", now);
        }
        let mut waits = Vec::new();
        for _ in 0..4 {
            let wait = limits
                .sign_in_allowed(attacker, "Ada@Example.com", now)
                .expect_err("a wait after the free failures")
                .retry_after_seconds;
            waits.push(wait);
            now += wait * 1_000;
            assert!(limits
                .sign_in_allowed(attacker, "ada@example.com", now)
                .is_ok());
            limits.sign_in_failed(attacker, "ada@example.com", now);
        }
        assert_eq!(waits, [1, 2, 4, 8]);
        // The owner, from their own address, is not kept waiting.
        assert!(limits
            .sign_in_allowed(owner, "ada@example.com", now)
            .is_ok());
        // A success ends the wait; the delays stop growing at their ceiling.
        limits.sign_in_succeeded(attacker, "ada@example.com");
        assert!(limits
            .sign_in_allowed(attacker, "ada@example.com", now)
            .is_ok());
        assert_eq!(failure_delay_ms(u32::MAX), FAILURE_DELAY_MAX_MS);
        // Many emails from one address: its own budget of failures, then waits.
        for n in 0..FREE_FAILURES_PER_ADDRESS {
            limits.sign_in_failed(owner, &format!("guess{n}@example.com"), now);
        }
        assert!(limits
            .sign_in_allowed(owner, "new@example.com", now)
            .is_err());
        limits.shrink(now + 2 * FAILURE_DELAY_MAX_MS + 1);
        assert!(limits
            .sign_in_allowed(owner, "new@example.com", now)
            .is_ok());
    }

    #[test]
    fn an_address_and_an_email_from_it_each_have_their_own_budget() {
        let limits = Limits::new(AuthRates {
            per_address: NonZeroU32::new(5).unwrap(),
            per_email: NonZeroU32::new(2).unwrap(),
            trusted_proxies: Vec::new(),
            ..AuthRates::default()
        });
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.check(here, Some("a@x.io")).is_ok());
        assert!(limits.check(here, Some("A@x.io ")).is_ok());
        let refused = limits.check(here, Some("a@x.io")).unwrap_err();
        assert!(refused.retry_after_seconds >= 1);
        // The owner, from elsewhere, is not kept out by what was spent here.
        assert!(
            limits.check(there, Some("a@x.io")).is_ok(),
            "another address"
        );
        assert!(limits.check(here, Some("b@x.io")).is_ok(), "another email");
        let _ = limits.check(here, None);
        assert!(
            limits.check(here, Some("c@x.io")).is_err(),
            "the address spent its budget"
        );
        assert!(limits.check(there, Some("c@x.io")).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_mapped_ipv4_is_ipv4() {
        let limits = Limits::new(AuthRates {
            per_address: NonZeroU32::new(2).unwrap(),
            per_email: NonZeroU32::new(100).unwrap(),
            trusted_proxies: Vec::new(),
            ..AuthRates::default()
        });
        for host in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"] {
            assert!(limits.check(host.parse().unwrap(), None).is_ok());
        }
        assert!(limits
            .check("2001:db8:1:2::77".parse().unwrap(), None)
            .is_err());
        assert!(limits
            .check("2001:db8:1:3::1".parse().unwrap(), None)
            .is_ok());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(limits.check(v4, None).is_ok());
        assert!(limits.check(v4, None).is_ok());
        assert!(limits
            .check("::ffff:192.0.2.7".parse().unwrap(), None)
            .is_err());
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_nearest_untrusted_hop() {
        let limits = Limits::new(AuthRates {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            ..AuthRates::default()
        });
        let headers = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert("x-forwarded-for", value.parse().unwrap());
            headers
        };
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        let forwarded = headers("203.0.113.5, 192.0.2.1, 10.9.9.9");
        // Through two proxies: the address the first one saw.
        assert_eq!(
            limits.client(proxy, &forwarded),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // From anybody else the header is the client's own words.
        assert_eq!(limits.client(stranger, &forwarded), stranger);
        // No header, or nonsense in it: the proxy itself, or the last good hop.
        assert_eq!(limits.client(proxy, &axum::http::HeaderMap::new()), proxy);
        assert_eq!(limits.client(proxy, &headers("junk")), proxy);
        assert_eq!(
            limits.client("::1".parse().unwrap(), &headers("2001:db8::7")),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn memory_is_bounded_by_the_buckets_whatever_strangers_send() {
        let limits = Limits::with_buckets(AuthRates::default(), 1024);
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let long = "x".repeat(4 << 10);
        for n in 0..20_000u32 {
            let address = IpAddr::from((n << 8).to_be_bytes());
            let _ = limits.check(address, Some(&format!("{n}{long}")));
        }
        let _ = limits.check(here, Some(&long));
        assert!(limits.entries() <= 2 * 1024, "{} entries", limits.entries());
    }
}
