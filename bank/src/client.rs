//! The bank as settlements see it ([`BankPort`]): over HTTP ([`HttpBank`]), or in process
//! without faults ([`InProcessBank`], the quick start's bank).

use std::time::Duration;

use kizo_engine::reconcile::Movement;
use kizo_engine::settlement::{BankOutcome, Kind, Settlement};
use kizo_engine::settlement_actors::{BankPort, PortError, PortFuture};

use crate::model::{movement_of, BankRecord};
use crate::server::{Answer, Bank, Statement};

/// What a settlement's answer from the bank means.
fn outcome_of(record: &BankRecord, settlement: &Settlement) -> BankOutcome {
    if record.direction() != Some(settlement.kind) {
        return BankOutcome::Unknown(format!(
            "the bank answered a {} for a {}",
            record.kind,
            settlement.kind.code()
        ));
    }
    if record.succeeded() {
        BankOutcome::Moved {
            amount: record.amount,
        }
    } else {
        BankOutcome::Declined(record.reason.clone().unwrap_or_else(|| "declined".into()))
    }
}

fn path(kind: Kind) -> &'static str {
    match kind {
        Kind::Deposit => "collections",
        Kind::Withdrawal => "payouts",
    }
}

/// The bank at a URL (`KIZO_BANK_URL`).
#[derive(Clone)]
pub struct HttpBank {
    base: String,
    token: Option<String>,
    currency: String,
    client: reqwest::Client,
}

/// Why an [`HttpBank`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpBankError {
    #[error("the bank's CA certificate: {0}")]
    Certificate(reqwest::Error),
    #[error("the bank's CA file holds no PEM certificate")]
    NoCertificate,
    #[error("the HTTP client: {0}")]
    Client(reqwest::Error),
}

impl HttpBank {
    /// The bank at `base` (`http://` or `https://`, whose certificate the public roots vouch
    /// for).
    pub fn new(base: &str, token: Option<String>, currency: &str) -> HttpBank {
        Self::with_ca(base, token, currency, None).expect("an HTTP client without extra roots")
    }

    /// The bank at `base`, also trusting the PEM certificate `ca` (a bank on a private CA).
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        currency: &str,
        ca: Option<&[u8]>,
    ) -> Result<HttpBank, HttpBankError> {
        let mut client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .https_only(base.starts_with("https://"));
        if let Some(pem) = ca {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(HttpBankError::Certificate)?;
            if certificates.is_empty() {
                return Err(HttpBankError::NoCertificate);
            }
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        Ok(HttpBank {
            base: base.trim_end_matches('/').to_string(),
            token,
            currency: currency.to_string(),
            client: client.build().map_err(HttpBankError::Client)?,
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        settlement: &Settlement,
        call: Call,
    ) -> BankOutcome {
        let response = match self.authorized(request).send().await {
            Ok(response) => response,
            Err(error) => return BankOutcome::Unknown(format!("the bank: {error}")),
        };
        let status = response.status();
        if status.is_success() {
            return match response.json::<BankRecord>().await {
                Ok(record) => outcome_of(&record, settlement),
                Err(error) => BankOutcome::Unknown(format!("the bank's answer: {error}")),
            };
        }
        match (call, status.as_u16()) {
            // A request to move money refused as such (never retried as is): a definite no.
            (Call::Send, 400 | 422) => {
                BankOutcome::Declined(format!("refused by the bank ({status})"))
            }
            // A status query: only the bank's own "no movement with this reference" means the
            // money did not move. A 404 from a proxy or a wrong path, or any other refusal of
            // the query, says nothing about the payment, and taking it for "not paid" could
            // refund a withdrawal the bank did pay.
            (Call::Check, 404) => match response.json::<serde_json::Value>().await {
                Ok(problem) if problem["code"] == NO_SUCH_MOVEMENT => BankOutcome::NotFound,
                _ => BankOutcome::Unknown(format!("the bank answered {status} without saying no")),
            },
            // 409 (the reference holds something else), 401, 5xx, and any refused status
            // query: nobody knows what happened.
            _ => BankOutcome::Unknown(format!("the bank answered {status}")),
        }
    }
}

/// What was asked of the bank: a movement, or a movement's status.
#[derive(Clone, Copy)]
enum Call {
    Send,
    Check,
}

/// The problem code of the bank's answer to a status query for a reference it never saw.
pub const NO_SUCH_MOVEMENT: &str = "not_found";

impl BankPort for HttpBank {
    fn send<'a>(&'a self, settlement: &'a Settlement) -> PortFuture<'a, BankOutcome> {
        Box::pin(async move {
            let url = format!("{}/{}", self.base, path(settlement.kind));
            let body = serde_json::json!({
                "reference": uuid::Uuid::from_u128(settlement.id),
                "amount": settlement.amount,
                "currency": self.currency,
                "account": uuid::Uuid::from_u128(settlement.account_id).to_string(),
            });
            self.answer(self.client.post(url).json(&body), settlement, Call::Send)
                .await
        })
    }

    fn check<'a>(&'a self, settlement: &'a Settlement) -> PortFuture<'a, BankOutcome> {
        Box::pin(async move {
            let url = format!(
                "{}/{}/{}",
                self.base,
                path(settlement.kind),
                uuid::Uuid::from_u128(settlement.id)
            );
            self.answer(self.client.get(url), settlement, Call::Check)
                .await
        })
    }

    fn statement(&self) -> PortFuture<'_, Result<Vec<Movement>, PortError>> {
        Box::pin(async move {
            let mut movements = Vec::new();
            let mut after = 0u64;
            loop {
                let url = format!("{}/statement?after={after}", self.base);
                let response = self
                    .authorized(self.client.get(url).timeout(Duration::from_secs(30)))
                    .send()
                    .await
                    .map_err(|e| PortError::Unavailable(format!("the bank's statement: {e}")))?;
                if !response.status().is_success() {
                    return Err(PortError::Unavailable(format!(
                        "the bank's statement: {}",
                        response.status()
                    )));
                }
                let page: Statement = response
                    .json()
                    .await
                    .map_err(|e| PortError::Corrupt(format!("the bank's statement: {e}")))?;
                for record in &page.movements {
                    if record.direction().is_none() {
                        return Err(PortError::Corrupt(format!(
                            "the bank's statement has a {:?}",
                            record.kind
                        )));
                    }
                    movements.push(movement_of(record));
                }
                match page.next_after {
                    Some(next) if next > after => after = next,
                    _ => return Ok(movements),
                }
            }
        })
    }
}

/// The bank in this process, without faults: no other process to run.
#[derive(Clone)]
pub struct InProcessBank {
    pub bank: Bank,
}

impl BankPort for InProcessBank {
    fn send<'a>(&'a self, settlement: &'a Settlement) -> PortFuture<'a, BankOutcome> {
        Box::pin(async move {
            let account = uuid::Uuid::from_u128(settlement.account_id).to_string();
            let reference = uuid::Uuid::from_u128(settlement.id);
            match self
                .bank
                .request(
                    settlement.kind,
                    reference,
                    settlement.amount,
                    &account,
                    false,
                )
                .await
            {
                Answer::Done(record) => outcome_of(&record, settlement),
                other => BankOutcome::Unknown(format!("{other:?}")),
            }
        })
    }

    fn check<'a>(&'a self, settlement: &'a Settlement) -> PortFuture<'a, BankOutcome> {
        Box::pin(async move {
            match self
                .bank
                .status(settlement.kind, uuid::Uuid::from_u128(settlement.id))
                .await
            {
                Answer::Done(record) => outcome_of(&record, settlement),
                Answer::NotFound => BankOutcome::NotFound,
                other => BankOutcome::Unknown(format!("{other:?}")),
            }
        })
    }

    fn statement(&self) -> PortFuture<'_, Result<Vec<Movement>, PortError>> {
        Box::pin(async move { Ok(self.bank.movements().await) })
    }
}
