//! Standard Webhooks signatures. The sender signs `<webhook-id>.<webhook-timestamp>.<body>`
//! with HMAC-SHA256 under the endpoint's secret and sends `v1,<base64 of the MAC>` in
//! `webhook-signature` (several, space-separated, while a secret is being rotated). A receiver
//! recomputes it, compares in constant time, and refuses a timestamp too far from its clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How a secret is written: this prefix, then the base64 of its bytes.
pub const SECRET_PREFIX: &str = "whsec_";
/// A secret's length in bytes, at least and at most (the spec: 24 to 64).
pub const SECRET_BYTES_MIN: usize = 24;
pub const SECRET_BYTES_MAX: usize = 64;
/// How far a delivery's timestamp may be from the receiver's clock (the spec's suggestion).
pub const TOLERANCE_SECONDS: u64 = 5 * 60;
/// Signatures one `webhook-signature` header may carry, at most (a receiver reads no more).
pub const SIGNATURES_MAX: usize = 8;

/// An endpoint's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret is written whsec_ and the base64 of its bytes")]
    Format,
    #[error("a secret has {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes")]
    Length,
}

impl Secret {
    /// A secret of these bytes (from a random source the caller owns).
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, SecretError> {
        if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&bytes.len()) {
            return Err(SecretError::Length);
        }
        Ok(Secret(bytes.to_vec()))
    }

    /// `whsec_<base64>`, as an endpoint's owner is given it.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Format)?;
        // At most 64 bytes: refuse a long text before decoding it.
        if encoded.len() > SECRET_BYTES_MAX.div_ceil(3) * 4 {
            return Err(SecretError::Length);
        }
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Format)?;
        Secret::from_bytes(&bytes)
    }

    /// The text [`Secret::parse`] reads.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` value of a delivery: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// What a receiver does: the timestamp within [`TOLERANCE_SECONDS`] of `now` (seconds),
    /// and one of the header's `v1` signatures that of this body.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: u64,
    ) -> Result<(), VerifyError> {
        let timestamp: u64 = timestamp.parse().map_err(|_| VerifyError::Timestamp)?;
        if timestamp.abs_diff(now) > TOLERANCE_SECONDS {
            return Err(VerifyError::Timestamp);
        }
        let expected = self.mac(id, timestamp, body);
        let matched = signatures
            .split(' ')
            .take(SIGNATURES_MAX)
            .filter_map(|signature| signature.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|given| bool::from(given.as_slice().ct_eq(&expected)));
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Signature)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the timestamp is not a number of seconds within tolerance of now")]
    Timestamp,
    #[error("no signature matches")]
    Signature,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: u64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_specifications_example_signs_and_verifies() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        assert_eq!(secret.to_text(), SPEC_SECRET);
        let now = SPEC_TIMESTAMP + 10;
        let ts = SPEC_TIMESTAMP.to_string();
        assert_eq!(
            secret.verify(SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_BODY, now),
            Ok(())
        );
        // Rotation: another signature first, ours second.
        let both = format!("v1,bm90IGl0 {SPEC_SIGNATURE}");
        assert_eq!(secret.verify(SPEC_ID, &ts, &both, SPEC_BODY, now), Ok(()));
    }

    #[test]
    fn a_changed_body_id_time_or_secret_does_not_verify() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let ts = SPEC_TIMESTAMP.to_string();
        let now = SPEC_TIMESTAMP;
        let refused = |id: &str, ts: &str, sig: &str, body: &[u8], now: u64| {
            secret.verify(id, ts, sig, body, now)
        };
        assert_eq!(
            refused(
                SPEC_ID,
                &ts,
                SPEC_SIGNATURE,
                br#"{"test": 2432232315}"#,
                now
            ),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            refused("msg_other", &ts, SPEC_SIGNATURE, SPEC_BODY, now),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            refused(
                SPEC_ID,
                &(SPEC_TIMESTAMP + 1).to_string(),
                SPEC_SIGNATURE,
                SPEC_BODY,
                now
            ),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            refused(
                SPEC_ID,
                &ts,
                SPEC_SIGNATURE,
                SPEC_BODY,
                now + TOLERANCE_SECONDS + 1
            ),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            refused(SPEC_ID, "soon", SPEC_SIGNATURE, SPEC_BODY, now),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            refused(
                SPEC_ID,
                &ts,
                "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                SPEC_BODY,
                now
            ),
            Err(VerifyError::Signature)
        );
        let other = Secret::from_bytes(&[7; 32]).unwrap();
        assert_eq!(
            other.verify(SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_BODY, now),
            Err(VerifyError::Signature)
        );
    }

    #[test]
    fn secrets_are_checked() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::Format)
        );
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::Format));
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(SecretError::Length));
        assert_eq!(Secret::from_bytes(&[1; 65]), Err(SecretError::Length));
        assert_eq!(
            Secret::parse(&"whsec_".repeat(100)),
            Err(SecretError::Length)
        );
        let long = Secret::from_bytes(&[9; 64]).unwrap();
        assert_eq!(Secret::parse(&long.to_text()), Ok(long));
        assert_eq!(
            format!("{:?}", Secret::from_bytes(&[1; 24]).unwrap()),
            "Secret(..)"
        );
    }
}
