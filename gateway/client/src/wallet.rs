//! The wallet API: signing up, a signed-in [`Session`] whose access token is renewed before it
//! runs out (and once more if the server refuses it), and payments that are never applied
//! twice however often they are retried.

use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::Method;
use serde::{Deserialize, Serialize};

use crate::{from_json, renew_at, to_json, Call, Client, Error, Retries, JSON};

/// A new user.
#[derive(Clone, Debug, Serialize)]
pub struct Signup {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
}

/// A wallet account and what it holds, in minor units.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Balance {
    pub id: String,
    pub currency: String,
    #[serde(deserialize_with = "decimal")]
    pub available: u128,
    #[serde(deserialize_with = "decimal")]
    pub held: u128,
    #[serde(deserialize_with = "decimal")]
    pub incoming: u128,
    #[serde(deserialize_with = "decimal")]
    pub posted: u128,
}

fn decimal<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The signed-in user and their accounts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Me {
    pub user: User,
    pub accounts: Vec<Balance>,
}

/// Who is paid: a wallet account, or a user by email.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    AccountId(String),
    Email(String),
}

/// A payment to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub from_account_id: String,
    pub to: Recipient,
    /// Minor units (cents).
    pub amount: u64,
    pub note: Option<String>,
}

/// A transfer as the wallet API shows it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct WalletTransfer {
    pub id: String,
    pub from_account_id: String,
    pub to_account_id: String,
    pub amount: u64,
    pub currency: String,
    /// payment, deposit or withdrawal.
    pub kind: String,
    /// posted, pending or voided.
    pub status: String,
    pub created_at: String,
    pub note: Option<String>,
}

/// The dashboard: a wallet's balance, this month's sums and the latest transfers.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Dashboard {
    pub account: Balance,
    /// Minor units sent this calendar month (UTC).
    #[serde(deserialize_with = "decimal")]
    pub sent_this_month: u128,
    #[serde(deserialize_with = "decimal")]
    pub received_this_month: u128,
    pub transfers_this_month: u64,
    /// The 5 latest, newest first.
    pub latest: Vec<WalletTransfer>,
}

#[derive(Deserialize)]
struct TokenPair {
    access_token: String,
    expires_in: u64,
    refresh_token: Option<String>,
}

struct Tokens {
    access: HeaderValue,
    refresh: String,
    renew_at: Instant,
}

impl Tokens {
    fn of(pair: TokenPair) -> Result<Tokens, Error> {
        let mut access = HeaderValue::from_str(&format!("Bearer {}", pair.access_token))
            .map_err(|_| Error::Decode("an access token that is not a header".into()))?;
        access.set_sensitive(true);
        Ok(Tokens {
            access,
            refresh: pair
                .refresh_token
                .ok_or_else(|| Error::Decode("no refresh token in the answer".into()))?,
            renew_at: renew_at(pair.expires_in),
        })
    }
}

/// A signed-in user. Its calls renew the access token when it is about to run out.
pub struct Session {
    client: Client,
    tokens: tokio::sync::Mutex<Tokens>,
}

impl Client {
    /// Signs a new user up (not retried: a second signup would be refused as a duplicate).
    pub async fn signup(&self, signup: &Signup) -> Result<Me, Error> {
        let answer = self
            .send(&Call {
                method: Method::POST,
                path: "/v1/auth/signup".into(),
                auth: None,
                body: Some((to_json(signup)?.into(), JSON)),
                accept: JSON,
                headers: Vec::new(),
                retries: Retries::Unsent,
            })
            .await?;
        from_json(&answer.body)
    }

    /// Signs in: a session, its tokens kept in this process.
    pub async fn login(&self, email: &str, password: &str) -> Result<Session, Error> {
        #[derive(Serialize)]
        struct Login<'a> {
            email: &'a str,
            password: &'a str,
        }
        let answer = self
            .send(&Call {
                method: Method::POST,
                path: "/v1/auth/login".into(),
                auth: None,
                body: Some((to_json(&Login { email, password })?.into(), JSON)),
                accept: JSON,
                headers: Vec::new(),
                retries: Retries::Unsent,
            })
            .await?;
        let tokens = Tokens::of(from_json(&answer.body)?)?;
        Ok(Session {
            client: self.clone(),
            tokens: tokio::sync::Mutex::new(tokens),
        })
    }
}

impl Session {
    /// The access token, renewed first when it is due (or when `stale` is the one refused).
    async fn access(&self, stale: Option<&HeaderValue>) -> Result<HeaderValue, Error> {
        let mut tokens = self.tokens.lock().await;
        let due = Instant::now() >= tokens.renew_at;
        if due || stale.is_some_and(|stale| *stale == tokens.access) {
            #[derive(Serialize)]
            struct Refresh<'a> {
                refresh_token: &'a str,
            }
            let answer = self
                .client
                .send(&Call {
                    method: Method::POST,
                    path: "/v1/auth/refresh".into(),
                    auth: None,
                    body: Some((
                        to_json(&Refresh {
                            refresh_token: &tokens.refresh,
                        })?
                        .into(),
                        JSON,
                    )),
                    accept: JSON,
                    headers: Vec::new(),
                    // A refresh token works once: a retry after a lost answer would be refused.
                    retries: Retries::Unsent,
                })
                .await?;
            *tokens = Tokens::of(from_json(&answer.body)?)?;
        }
        Ok(tokens.access.clone())
    }

    /// Sends a call with the session's token; once more with a renewed one if it is refused
    /// as unauthorized (it expired in flight, or the server restarted its clock).
    async fn send(&self, mut call: Call) -> Result<Bytes, Error> {
        let access = self.access(None).await?;
        call.auth = Some(access.clone());
        match self.client.send(&call).await {
            Err(Error::Problem { status: 401, .. }) => {
                call.auth = Some(self.access(Some(&access)).await?);
                Ok(self.client.send(&call).await?.body)
            }
            other => Ok(other?.body),
        }
    }

    fn get(path: impl Into<std::borrow::Cow<'static, str>>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            auth: None,
            body: None,
            accept: JSON,
            headers: Vec::new(),
            retries: Retries::Safe,
        }
    }

    /// The user and their accounts' balances.
    pub async fn me(&self) -> Result<Me, Error> {
        from_json(&self.send(Self::get("/v1/me")).await?)
    }

    /// The dashboard of the user's wallet.
    pub async fn dashboard(&self) -> Result<Dashboard, Error> {
        from_json(&self.send(Self::get("/v1/dashboard")).await?)
    }

    /// Pays. Its `Idempotency-Key` is made here, once, and sent with every retry: a payment
    /// whose answer was lost is found, never made twice.
    pub async fn pay(&self, payment: &Payment) -> Result<WalletTransfer, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            from_account_id: &'a str,
            to: &'a Recipient,
            amount: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            note: Option<&'a str>,
        }
        let body = to_json(&Body {
            from_account_id: &payment.from_account_id,
            to: &payment.to,
            amount: payment.amount,
            note: payment.note.as_deref(),
        })?;
        let key = uuid::Uuid::new_v4().to_string();
        let call = Call {
            method: Method::POST,
            path: "/v1/transfers".into(),
            auth: None,
            body: Some((body.into(), JSON)),
            accept: JSON,
            headers: vec![("idempotency-key", key)],
            retries: Retries::Safe,
        };
        from_json(&self.send(call).await?)
    }

    /// One of the user's transfers.
    pub async fn transfer(&self, id: &str) -> Result<WalletTransfer, Error> {
        from_json(&self.send(Self::get(format!("/v1/transfers/{id}"))).await?)
    }

    /// A page of an account's history, newest first: at most `limit` (1 to 200), before
    /// `cursor` (a page's `next_cursor`). Returns the transfers and the next page's cursor.
    pub async fn history(
        &self,
        account_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<WalletTransfer>, Option<String>), Error> {
        #[derive(Deserialize)]
        struct Page {
            transfers: Vec<WalletTransfer>,
            next_cursor: Option<String>,
        }
        let mut path = format!("/v1/accounts/{account_id}/transfers?limit={limit}");
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page: Page = from_json(&self.send(Self::get(path)).await?)?;
        Ok((page.transfers, page.next_cursor))
    }

    /// Signs out: the session's tokens stop working.
    pub async fn logout(self) -> Result<(), Error> {
        let call = Call {
            method: Method::POST,
            path: "/v1/auth/logout".into(),
            auth: None,
            body: None,
            accept: JSON,
            headers: Vec::new(),
            // Once the session is ended, a retry would be refused as unauthorized.
            retries: Retries::Unsent,
        };
        self.send(call).await.map(|_| ())
    }
}
