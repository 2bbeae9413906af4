//! Rate limits on the routes that create accounts and sessions (signup, login, refresh): per
//! client address and per email, so that neither one address nor one target can be hammered.
//! Over the limit: `429 rate_limited` with `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Requests per minute to the auth routes from one address, and for one email.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthRates {
    pub per_address: NonZeroU32,
    pub per_email: NonZeroU32,
}

impl Default for AuthRates {
    fn default() -> Self {
        Self {
            per_address: NonZeroU32::new(60).expect("non-zero"),
            per_email: NonZeroU32::new(10).expect("non-zero"),
        }
    }
}

#[derive(Clone)]
pub struct Limits {
    by_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    by_email: Arc<DefaultKeyedRateLimiter<String>>,
}

/// A refusal: the caller may try again after this many seconds.
pub struct Limited {
    pub retry_after_seconds: u64,
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many attempts; retry in {} s", self.retry_after_seconds),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&self.retry_after_seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl Limits {
    pub fn new(rates: AuthRates) -> Limits {
        Limits {
            by_address: Arc::new(RateLimiter::keyed(Quota::per_minute(rates.per_address))),
            by_email: Arc::new(RateLimiter::keyed(Quota::per_minute(rates.per_email))),
        }
    }

    /// Counts one attempt from `address`, about `email` when there is one.
    pub fn check(&self, address: IpAddr, email: Option<&str>) -> Result<(), Limited> {
        let limited = |not_until: governor::NotUntil<_>| Limited {
            retry_after_seconds: not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1),
        };
        self.by_address.check_key(&address).map_err(limited)?;
        if let Some(email) = email {
            self.by_email
                .check_key(&email.trim().to_lowercase())
                .map_err(limited)?;
        }
        Ok(())
    }

    /// Forgets keys whose limits have fully replenished (bounded memory).
    pub fn shrink(&self) {
        self.by_address.retain_recent();
        self.by_email.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_and_an_address_each_have_their_own_budget() {
        let limits = Limits::new(AuthRates {
            per_address: NonZeroU32::new(5).unwrap(),
            per_email: NonZeroU32::new(2).unwrap(),
        });
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limits.check(here, Some("a@x.io")).is_ok());
        assert!(limits.check(there, Some("A@x.io ")).is_ok());
        let refused = limits.check(here, Some("a@x.io")).unwrap_err();
        assert!(refused.retry_after_seconds >= 1);
        assert!(limits.check(here, Some("b@x.io")).is_ok(), "another email");
        for _ in 0..2 {
            let _ = limits.check(here, None);
        }
        assert!(
            limits.check(here, Some("c@x.io")).is_err(),
            "the address spent its budget"
        );
        assert!(limits.check(there, Some("c@x.io")).is_ok());
    }
}
