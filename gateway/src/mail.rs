//! Mail: where it goes, and the sender task that empties the outbox. Handlers never send
//! mail: they write it to the outbox in the transaction of what it tells
//! (`UserStore::issue_email_token`), and [`run_outbox`] delivers it, retrying with backoff.
//! With `--smtp-url` it goes to that SMTP server (lettre); without one (development), each
//! mail is kept as a file under the data folder and named in a log line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kizo_persistence::users::{OutboxMail, UserStore};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Mails read from the outbox at a time.
const OUTBOX_BATCH: u32 = 32;
/// Attempts before a mail is given up on (about a day with the backoff below).
pub const MAIL_ATTEMPTS_MAX: i32 = 16;
/// The longest wait between two attempts of one mail.
const RETRY_MAX_MS: i64 = 3_600_000;
/// How long one SMTP delivery may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// How mail is sent (`--smtp-url`, `--mail-from`, `--public-url`).
#[derive(Clone, Debug)]
pub struct MailSettings {
    /// `smtp://host:port` (plain; `?tls=required` for STARTTLS) or `smtps://host:port` (TLS),
    /// with `user:password@` when the server asks for it. Without it, development mail.
    pub smtp_url: Option<String>,
    /// The sender, as `Name <address>`.
    pub from: String,
    /// Where people reach the web app: links in mail point there.
    pub public_url: String,
    /// Development mail's folder; without one (and without an SMTP server) mail is only logged.
    pub dir: Option<PathBuf>,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            smtp_url: None,
            from: "Kizo <no-reply@kizo.localhost>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the address {address:?}: {source}")]
    Address {
        address: String,
        source: lettre::address::AddressError,
    },
    #[error("the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("the SMTP server: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("the mail folder: {0}")]
    Folder(#[from] std::io::Error),
}

/// Where mail goes.
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    /// Development: a file per mail (when a folder is set) and a log line.
    Development { dir: Option<PathBuf>, from: Mailbox },
}

fn mailbox(address: &str) -> Result<Mailbox, MailError> {
    address.parse().map_err(|source| MailError::Address {
        address: address.to_string(),
        source,
    })
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> Result<Mailer, MailError> {
        let from = mailbox(&settings.from)?;
        Ok(match &settings.smtp_url {
            Some(url) => Mailer::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
                from,
            },
            None => Mailer::Development {
                dir: settings.dir.clone(),
                from,
            },
        })
    }

    fn message(from: &Mailbox, mail: &OutboxMail) -> Result<Message, MailError> {
        Ok(Message::builder()
            .from(from.clone())
            .to(mailbox(&mail.recipient)?)
            .subject(&mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())?)
    }

    pub async fn deliver(&self, mail: &OutboxMail) -> Result<(), MailError> {
        match self {
            Mailer::Smtp { transport, from } => {
                transport.send(Self::message(from, mail)?).await?;
            }
            Mailer::Development { dir, from } => {
                let message = Self::message(from, mail)?;
                let file = match dir {
                    Some(dir) => {
                        tokio::fs::create_dir_all(dir).await?;
                        let file = dir.join(format!("{:012}.eml", mail.id));
                        tokio::fs::write(&file, message.formatted()).await?;
                        Some(file)
                    }
                    None => None,
                };
                tracing::info!(to = %mail.recipient, subject = %mail.subject, file = ?file, "mail kept, not sent (no --smtp-url)");
            }
        }
        Ok(())
    }
}

/// The wait before the attempt that follows `attempts` failed ones: 2 s, doubling, at most an
/// hour.
fn retry_in_ms(attempts: i32) -> i64 {
    (2_000i64 << attempts.clamp(0, 20)).min(RETRY_MAX_MS)
}

/// Delivers the outbox's mail as it comes due, until the task is stopped. `wake` makes it look
/// at once (a handler just wrote a mail).
pub async fn run_outbox(users: UserStore, mailer: Arc<Mailer>, wake: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let due = match users.due_mail(users.now_ms(), OUTBOX_BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "the outbox could not be read");
                continue;
            }
        };
        for mail in due {
            let outcome = match mailer.deliver(&mail).await {
                Ok(()) => {
                    metrics::counter!("kizo_mail_total", "result" => "sent").increment(1);
                    Ok(())
                }
                Err(error) if mail.attempts + 1 >= MAIL_ATTEMPTS_MAX => {
                    metrics::counter!("kizo_mail_total", "result" => "given_up").increment(1);
                    tracing::error!(%error, id = mail.id, "a mail was given up on");
                    Err(None)
                }
                Err(error) => {
                    metrics::counter!("kizo_mail_total", "result" => "retried").increment(1);
                    tracing::warn!(%error, id = mail.id, "a mail was not sent; retrying");
                    Err(Some(users.now_ms() + retry_in_ms(mail.attempts)))
                }
            };
            if let Err(error) = users.mail_attempted(mail.id, outcome).await {
                // Sent again later: at least once, as the outbox promises.
                tracing::warn!(%error, id = mail.id, "a mail's delivery could not be recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_in_ms(0), 2_000);
        assert_eq!(retry_in_ms(1), 4_000);
        assert_eq!(retry_in_ms(MAIL_ATTEMPTS_MAX), RETRY_MAX_MS);
        assert_eq!(retry_in_ms(i32::MAX), RETRY_MAX_MS);
    }

    #[test]
    fn a_bad_sender_is_refused_at_start() {
        let settings = MailSettings {
            from: "not an address".into(),
            ..MailSettings::default()
        };
        assert!(matches!(
            Mailer::new(&settings),
            Err(MailError::Address { .. })
        ));
    }
}
