//! Authentication for the wallet API: Argon2id password hashes (OWASP parameters, with a
//! server-side pepper) computed on a bounded pool of blocking threads, apart from the request
//! path; short-lived JWT access tokens (HS256 pinned; `exp`, `iss`, `aud` and the session
//! checked); opaque refresh tokens, stored hashed, each usable once.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::server::AppState;

pub const ISSUER: &str = "kizo";
pub const AUDIENCE: &str = "kizo-wallet";
/// Access tokens live this long (seconds).
pub const ACCESS_TTL_SECONDS: u64 = 15 * 60;
/// Refresh tokens live this long (milliseconds).
pub const REFRESH_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// Hashes and checks passwords on threads of its own, one per core but one (at least one),
/// that run at the lowest scheduling priority (`SCHED_IDLE`, else nice 19): when transfers need
/// the cores, they get them, and a storm of logins waits instead (with hashes at normal
/// priority on both cores, a login storm nearly doubled transfers' p99). At most one hash per
/// thread is under way; the others queue on the semaphore.
#[derive(Clone)]
pub struct Passwords {
    pepper: Arc<[u8]>,
    permits: Arc<Semaphore>,
    jobs: crossbeam_channel::Sender<Box<dyn FnOnce() + Send>>,
    /// Requests waiting for a hashing thread, and how many may: past it, 503 at once rather
    /// than a queue (and its memory) that grows with a storm of logins.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    waiting_max: usize,
    /// Checked when the email is unknown, so that both failures take the same time.
    decoy: Arc<str>,
}

/// Requests that may wait for a hashing thread, per thread.
pub const HASH_WAITING_PER_THREAD: usize = 64;

/// One place in the hashing queue, given back however the wait ends (a client that leaves
/// drops its request, and with it this).
struct Waiting(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Passwords {
    pub fn new(pepper: &str) -> Passwords {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.saturating_sub(1).max(1);
        Self::with_threads(pepper, threads, threads * HASH_WAITING_PER_THREAD)
    }

    fn with_threads(pepper: &str, threads: usize, waiting_max: usize) -> Passwords {
        // One core is left to everything else: even at idle priority, a hash thread on every
        // core took the caches and memory bandwidth that transfers need (on 2 cores, a login
        // storm raised transfers' p99 1.55 times with two hash threads, 1.28 times with one).
        let (jobs, queue) = crossbeam_channel::unbounded::<Box<dyn FnOnce() + Send>>();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    lowest_priority();
                    // Ends when every `Passwords` is dropped.
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                })
                .expect("a password-hashing thread");
        }
        let pepper: Arc<[u8]> = pepper.as_bytes().into();
        let decoy = hash_now(&pepper, "a password nobody has").expect("a decoy hash");
        Passwords {
            pepper,
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            waiting_max,
            decoy: decoy.into(),
        }
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let pepper = self.pepper.clone();
        self.on_pool(move || hash_now(&pepper, &password)).await?
    }

    /// Whether `password` matches `stored` (or, with no stored hash, a decoy: false).
    pub async fn verify(&self, stored: Option<String>, password: String) -> Result<bool, ApiError> {
        let pepper = self.pepper.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.decoy.to_string());
        let matches = self
            .on_pool(move || {
                let Ok(parsed) = PasswordHash::new(&stored) else {
                    return false;
                };
                argon(&pepper)
                    .map(|a| a.verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(known && matches)
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let waiting = Waiting(self.waiting.clone());
        if self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            >= self.waiting_max
        {
            drop(waiting);
            metrics::counter!("kizo_password_hash_refused_total").increment(1);
            return Err(ApiError::unavailable(
                "too many sign-ins at once; retry in a moment",
            ));
        }
        let _permit = self.permits.acquire().await.map_err(|_| unavailable())?;
        drop(waiting);
        let started = std::time::Instant::now();
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                // The client may have left while the job queued: then nobody reads the answer.
                if !done.is_closed() {
                    let _ = done.send(work());
                }
            }))
            .map_err(|_| unavailable())?;
        let result = result.await.map_err(|_| unavailable())?;
        metrics::histogram!("kizo_password_hash_seconds").record(started.elapsed().as_secs_f64());
        Ok(result)
    }
}

fn unavailable() -> ApiError {
    ApiError::unavailable("password hashing is unavailable")
}

/// Lowers the calling thread's scheduling priority to the lowest (Linux: a thread's nice value
/// is its own). Elsewhere, or if refused, the thread keeps its priority.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: these calls only change the calling thread's scheduling (`0` names the calling
    // thread on Linux); `param` outlives the call.
    unsafe {
        // SCHED_IDLE: run only when nothing else wants the core; nice 19 if that is refused.
        // The system call itself: musl's `sched_setscheduler` always fails (ENOSYS), and its
        // `sched_param` has more fields than glibc's (zeroed, they mean nothing here).
        let param: libc::sched_param = std::mem::zeroed();
        if libc::syscall(libc::SYS_sched_setscheduler, 0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

fn argon(pepper: &[u8]) -> Result<Argon2<'_>, argon2::Error> {
    // One of OWASP's equivalent Argon2id settings: 12 MiB, 3 passes, 1 lane. The same strength
    // as 19 MiB and 2 passes, with less memory to walk per hash, which is what a login storm
    // takes from transfers on a small machine. Hashes made with other settings still verify:
    // a hash carries its own.
    let params = Params::new(12 * 1024, 3, 1, None)?;
    Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(pepper: &[u8], password: &str) -> Result<String, ApiError> {
    let salt =
        SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|_| unavailable())?;
    let argon = argon(pepper).map_err(|_| unavailable())?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| unavailable())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The session: revoked sessions' tokens stop working at once.
    pub sid: String,
    /// The user's wallet account (a decimal u128): it never changes, so the token can say it.
    pub wid: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens already verified, by their whole text: a client sends one token many times, and
    /// checking it again (base64, JSON, HMAC) would cost more than the rest of a transfer's
    /// request. Expiry is still checked on every use.
    verified: Arc<std::sync::Mutex<std::collections::HashMap<Box<str>, Claims>>>,
    /// The server's one clock: tokens are issued and checked against it.
    clock: Arc<dyn kizo_engine::Clock>,
}

/// The most verified tokens remembered; when full, all are forgotten at once.
const VERIFIED_MAX: usize = 100_000;

impl Tokens {
    pub fn new(secret: &str, clock: Arc<dyn kizo_engine::Clock>) -> Tokens {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        Tokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            verified: Arc::default(),
            clock,
        }
    }

    pub fn issue(&self, user_id: &str, session_id: &str, wallet_id: u128) -> String {
        let now = self.clock.now_ns() / 1_000_000_000;
        let claims = Claims {
            sub: user_id.into(),
            sid: session_id.into(),
            wid: wallet_id.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + ACCESS_TTL_SECONDS,
        };
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        let now = self.clock.now_ns() / 1_000_000_000;
        if let Some(claims) = self.verified.lock().expect("not poisoned").get(token) {
            // As the decoder checks it, with no leeway.
            return (claims.exp >= now).then(|| claims.clone());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        let mut verified = self.verified.lock().expect("not poisoned");
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Some(claims)
    }
}

/// A new refresh token (256 random bits, hex) and the hash that is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = hash_refresh(&token);
    (token, hash)
}

pub fn hash_refresh(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The cookie that carries the web app's refresh token: `HttpOnly` (no script reads it),
/// `SameSite=Strict` (no other site's page sends it), sent only to `/v1/auth`, and `Secure`
/// when the server is reached over HTTPS. The access token stays in the page's memory.
pub const REFRESH_COOKIE: &str = "kizo_refresh";

/// A cookie that says only that this browser holds a session (its value is `1`, no secret),
/// sent to every path so that `GET /` can show the wallet to a signed-in visitor and the
/// landing page to anyone else, before any script runs. It is set and cleared with the refresh
/// cookie (`HttpOnly`, `SameSite=Strict`, the same lifetime); a stale one costs a visitor a
/// sign-in page, never access.
pub const SIGNED_IN_COOKIE: &str = "kizo_signed_in";

/// The header a request authenticated by the refresh cookie must carry (any value but
/// empty). A page of another origin cannot set it without a CORS preflight, which this
/// server never grants; with `SameSite=Strict` it is the second lock on the same door.
pub const CSRF_HEADER: &str = "x-kizo-csrf";

/// `Set-Cookie` for a new refresh token; `secure` when the public URL is `https://`.
pub fn refresh_cookie(token: &str, secure: bool) -> header::HeaderValue {
    let max_age = REFRESH_TTL_MS / 1000;
    let secure = if secure { "; Secure" } else { "" };
    header::HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={token}; Path=/v1/auth; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a token is hex")
}

/// `Set-Cookie` that deletes the refresh cookie.
pub fn cleared_refresh_cookie(secure: bool) -> header::HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    header::HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}=; Path=/v1/auth; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .expect("ASCII")
}

/// `Set-Cookie` for [`SIGNED_IN_COOKIE`], beside a new refresh cookie.
pub fn signed_in_cookie(secure: bool) -> header::HeaderValue {
    let max_age = REFRESH_TTL_MS / 1000;
    let secure = if secure { "; Secure" } else { "" };
    header::HeaderValue::from_str(&format!(
        "{SIGNED_IN_COOKIE}=1; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("ASCII")
}

/// `Set-Cookie` that deletes [`SIGNED_IN_COOKIE`].
pub fn cleared_signed_in_cookie(secure: bool) -> header::HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    header::HeaderValue::from_str(&format!(
        "{SIGNED_IN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .expect("ASCII")
}

/// Whether the request carries [`SIGNED_IN_COOKIE`].
pub fn says_signed_in(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .any(|pair| pair.trim().strip_prefix(SIGNED_IN_COOKIE) == Some("=1"))
}

/// The refresh token of the request's cookie, once its CSRF header is checked; `Ok(None)`
/// when it carries no such cookie.
pub fn refresh_from_cookie(headers: &header::HeaderMap) -> Result<Option<String>, ApiError> {
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_string());
    let Some(token) = token else {
        return Ok(None);
    };
    if headers.get(CSRF_HEADER).is_none_or(|v| v.is_empty()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf_header_missing",
            format!("a request authenticated by the refresh cookie must carry {CSRF_HEADER}"),
        ));
    }
    Ok(Some(token))
}

/// Sessions revoked while their access tokens may still be alive, in memory: checking a
/// token costs no I/O. Filled at start from the store (sessions revoked within one access-token
/// lifetime) and on every revocation, after it is durable and before it is answered. One
/// process serves a store, so no revocation escapes it.
#[derive(Clone, Default)]
pub struct Revocations {
    revoked_at_ms: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

impl Revocations {
    /// Access tokens outlive their session's revocation by at most this long.
    pub const KEPT_MS: i64 = ACCESS_TTL_SECONDS as i64 * 1000;

    pub async fn load(
        users: &kizo_persistence::users::UserStore,
    ) -> Result<Self, kizo_persistence::StoreError> {
        let revocations = Revocations::default();
        let since = users.now_ms() - Self::KEPT_MS;
        for (session_id, at) in users.revoked_since(since).await? {
            revocations.insert(session_id, at);
        }
        Ok(revocations)
    }

    /// Adds the revocations made since `since_ms` (by any node: on a cluster, a session ended
    /// at one node ends at every other within a poll).
    pub async fn refresh(
        &self,
        users: &kizo_persistence::users::UserStore,
        since_ms: i64,
    ) -> Result<(), kizo_persistence::StoreError> {
        for (session_id, at) in users.revoked_since(since_ms).await? {
            self.insert(session_id, at);
        }
        Ok(())
    }

    pub fn insert(&self, session_id: String, at_ms: i64) {
        self.revoked_at_ms
            .lock()
            .expect("not poisoned")
            .insert(session_id, at_ms);
    }

    pub fn contains(&self, session_id: &str) -> bool {
        self.revoked_at_ms
            .lock()
            .expect("not poisoned")
            .contains_key(session_id)
    }

    /// Forgets revocations whose tokens have all expired by `now_ms`.
    pub fn prune(&self, now_ms: i64) {
        let before = now_ms - Self::KEPT_MS - 60_000;
        self.revoked_at_ms
            .lock()
            .expect("not poisoned")
            .retain(|_, at| *at >= before);
    }
}

/// The caller of a wallet route: a valid access token of a session still open.
pub struct Authenticated {
    pub user_id: String,
    pub session_id: String,
    /// The caller's wallet account.
    pub wallet: u128,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <access token>`"))?;
        let claims = state
            .tokens
            .verify(token)
            .ok_or_else(|| ApiError::unauthorized("the access token is invalid or expired"))?;
        if state.revocations.contains(&claims.sid) {
            return Err(ApiError::unauthorized(
                "the session has ended; log in again",
            ));
        }
        let wallet = claims
            .wid
            .parse()
            .map_err(|_| ApiError::unauthorized("the access token names no wallet"))?;
        Ok(Authenticated {
            user_id: claims.sub,
            session_id: claims.sid,
            wallet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_for_signature_issuer_audience_and_algorithm() {
        let tokens = Tokens::new(
            "a secret of the server, 32 bytes+",
            Arc::new(kizo_engine::SystemClock),
        );
        let token = tokens.issue("u1", "s1", 7);
        let claims = tokens.verify(&token).unwrap();
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.sid.as_str(),
                claims.wid.as_str()
            ),
            ("u1", "s1", "7")
        );
        assert!(Tokens::new(
            "another secret, also long enough..",
            Arc::new(kizo_engine::SystemClock)
        )
        .verify(&token)
        .is_none());
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = "eyJzdWIiOiJ1MiIsInNpZCI6InMxIiwid2lkIjoiNyIsImlzcyI6Imtpem8iLCJhdWQiOiJraXpvLXdhbGxldCIsImlhdCI6MCwiZXhwIjo0MTAyNDQ0ODAwfQ";
        parts[1] = forged;
        assert!(tokens.verify(&parts.join(".")).is_none());
        // `alg: none` is refused.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{forged}.");
        assert!(tokens.verify(&none).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storm_of_sign_ins_waits_in_a_bounded_queue_and_the_rest_is_refused_at_once() {
        let passwords = Passwords::with_threads("pepper", 1, 2);
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let passwords = passwords.clone();
                tokio::spawn(async move { passwords.verify(None, "guess".into()).await })
            })
            .collect();
        let mut refused = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(matched) => assert!(!matched),
                Err(error) => {
                    assert_eq!(error.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    refused += 1;
                }
            }
        }
        // One hashing, two waiting: the other five are refused.
        assert!(refused >= 5, "{refused} refused");
        assert_eq!(
            passwords.waiting.load(std::sync::atomic::Ordering::Acquire),
            0
        );
    }

    #[tokio::test]
    async fn passwords_verify_and_unknown_users_fail_the_same_way() {
        let passwords = Passwords::new("pepper");
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"),
            "{hash}"
        );
        assert!(passwords
            .verify(Some(hash.clone()), "correct horse".into())
            .await
            .unwrap());
        assert!(!passwords
            .verify(Some(hash.clone()), "wrong".into())
            .await
            .unwrap());
        assert!(!passwords
            .verify(None, "correct horse".into())
            .await
            .unwrap());
        // A hash made with other settings (OWASP's 19 MiB, 2 passes) still verifies.
        let pepper = b"pepper";
        let older =
            Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
                .unwrap()
                .hash_password(
                    b"correct horse",
                    &SaltString::encode_b64(b"sixteen byte slt").unwrap(),
                )
                .unwrap()
                .to_string();
        assert!(
            older.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{older}"
        );
        assert!(passwords
            .verify(Some(older), "correct horse".into())
            .await
            .unwrap());
        // Another pepper: the same password no longer matches.
        assert!(!Passwords::new("other")
            .verify(Some(hash), "correct horse".into())
            .await
            .unwrap());
    }
}
