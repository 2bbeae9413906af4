//! Kizo's webhooks as pure rules. No I/O, no clock, no randomness: times are numbers passed
//! in, secrets are bytes handed over, and the carrying of requests belongs to the gateway.
//!
//! - [`signature`]: the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 over `id.timestamp.body`, with a
//!   `whsec_` secret), to sign a delivery and to verify one as a receiver does.
//! - [`endpoint`]: what an endpoint may be (its URL, the event kinds it asks for) and how many
//!   one owner may have.
//! - [`delivery`]: one event to one endpoint: attempts with exponential backoff for a bounded
//!   time, then parked as failed until someone asks for it again.

pub mod delivery;
pub mod endpoint;
pub mod signature;

pub use delivery::{Attempt, Delivery, DeliveryState, RetryPolicy};
pub use endpoint::{EndpointError, EndpointSpec, ENDPOINTS_PER_OWNER_MAX};
pub use signature::{Secret, SecretError, VerifyError};
