//! What an endpoint may be: an `http://` or `https://` URL without credentials or fragment,
//! at most [`URL_MAX`] bytes, and the event kinds it wants (some of those the caller knows, or
//! `*` for every kind). An address on this machine or a private network is refused unless the
//! operator allows it: a webhook must not become a way to reach what only the server reaches.

use std::net::IpAddr;

/// The longest URL taken.
pub const URL_MAX: usize = 2048;
/// Endpoints one owner (an API key, a user) may register.
pub const ENDPOINTS_PER_OWNER_MAX: usize = 16;
/// Kinds one endpoint may name.
pub const KINDS_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the URL must be http:// or https://, at most {URL_MAX} bytes, with a host, without credentials, spaces or a fragment")]
    Url,
    #[error("the URL's host is a loopback, private or link-local address, which this server does not call")]
    PrivateAddress,
    #[error("name 1 to {KINDS_MAX} event kinds, each one of the documented kinds, or \"*\"")]
    Kinds,
}

/// An endpoint as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub url: String,
    /// Sorted, without repeats; `["*"]` for every kind.
    pub kinds: Vec<String>,
}

impl EndpointSpec {
    /// Checks `url` and `kinds` against `known` (the kinds events have). `allow_private` lets
    /// the URL name a loopback or private address (tests, a receiver beside the server).
    pub fn new(
        url: &str,
        kinds: &[String],
        known: &[&str],
        allow_private: bool,
    ) -> Result<EndpointSpec, EndpointError> {
        let host = host_of(url)?;
        if !allow_private && is_private_host(host) {
            return Err(EndpointError::PrivateAddress);
        }
        if kinds.is_empty() || kinds.len() > KINDS_MAX {
            return Err(EndpointError::Kinds);
        }
        let mut kinds: Vec<String> = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let every = kinds.iter().any(|k| k == "*");
        if every {
            kinds = vec!["*".into()];
        } else if !kinds.iter().all(|k| known.contains(&k.as_str())) {
            return Err(EndpointError::Kinds);
        }
        Ok(EndpointSpec {
            url: url.to_string(),
            kinds,
        })
    }

    /// Whether an event of `kind` goes to this endpoint.
    pub fn wants(&self, kind: &str) -> bool {
        kinds_include(&self.kinds, kind)
    }
}

/// Whether `kinds` (as an [`EndpointSpec`] keeps them) include `kind`.
pub fn kinds_include(kinds: &[String], kind: &str) -> bool {
    kinds.first().is_some_and(|k| k == "*") || kinds.iter().any(|k| k == kind)
}

/// The host of an `http(s)://` URL, checked.
fn host_of(url: &str) -> Result<&str, EndpointError> {
    if url.len() > URL_MAX
        || url.contains('#')
        || url.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(EndpointError::Url);
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(EndpointError::Url)?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(EndpointError::Url);
    }
    // A bracketed IPv6 address, or a name or IPv4 address before an optional port.
    let host = match authority.strip_prefix('[') {
        Some(inner) => inner.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(EndpointError::Url);
    }
    Ok(host)
}

/// Whether `host` names this machine or a private network: `localhost`, or an address that
/// is loopback, private, link-local (cloud metadata lives there), unspecified or unique-local.
/// A name is resolved by whoever calls it, who checks the address it gets with
/// [`is_private_address`] too.
pub fn is_private_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(is_private_address)
}

pub fn is_private_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private_address(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["transfer.posted", "account.created"];

    fn kinds(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn urls_are_checked() {
        let ok = |url: &str| EndpointSpec::new(url, &kinds(&["*"]), KNOWN, false);
        assert!(ok("https://hooks.example.com/kizo?x=1").is_ok());
        assert!(ok("http://hooks.example.com:8080").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "https://exa mple.com/",
            "example.com",
            "https://:80/",
        ] {
            assert_eq!(ok(bad), Err(EndpointError::Url), "{bad}");
        }
        assert_eq!(
            ok(&format!("https://example.com/{}", "a".repeat(URL_MAX))),
            Err(EndpointError::Url)
        );
        for private in [
            "http://127.0.0.1:9000/",
            "http://localhost/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:80/",
            "http://[fd00::1]/",
            "http://[::ffff:192.168.0.1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ] {
            assert_eq!(ok(private), Err(EndpointError::PrivateAddress), "{private}");
        }
        assert!(EndpointSpec::new("http://127.0.0.1:9000/", &kinds(&["*"]), KNOWN, true).is_ok());
    }

    #[test]
    fn kinds_are_checked_and_matched() {
        let spec = EndpointSpec::new(
            "https://example.com/",
            &kinds(&["transfer.posted", "transfer.posted", "account.created"]),
            KNOWN,
            false,
        )
        .unwrap();
        assert_eq!(spec.kinds, kinds(&["account.created", "transfer.posted"]));
        assert!(spec.wants("transfer.posted") && !spec.wants("transfer.voided"));
        let every = EndpointSpec::new(
            "https://example.com/",
            &kinds(&["*", "account.created"]),
            KNOWN,
            false,
        )
        .unwrap();
        assert!(every.wants("transfer.voided"));
        for bad in [
            kinds(&[]),
            kinds(&["transfer.pending"]),
            vec!["x".to_string(); KINDS_MAX + 1],
        ] {
            assert_eq!(
                EndpointSpec::new("https://example.com/", &bad, KNOWN, false),
                Err(EndpointError::Kinds)
            );
        }
    }
}
