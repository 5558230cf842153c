//! Which address a request comes from: the connection's peer, or, only when that peer is a
//! trusted proxy (`trusted_proxies`, CIDR networks), the client the proxies name in
//! `X-Forwarded-For` or `Forwarded` (RFC 7239). The chain is read from the right, skipping
//! trusted proxies: the first address that is not one is the client (the left-most entries
//! are whatever the client chose to send, so they are never believed). This address is what
//! the brute-force limiters count and what self-audit events record.

use axum::http::HeaderMap;
use evident_core::filter::{NetworkSyntax, parse_network};
use std::net::{IpAddr, SocketAddr};

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a
/// network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// A `trusted_proxies` entry that is not a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an IP address or CIDR network: {problem}")]
pub struct BadCidr {
    pub text: String,
    pub problem: &'static str,
}

impl std::str::FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Cidr, BadCidr> {
        let (addr, prefix_len) =
            parse_network(text.trim(), |addr| addr.to_canonical()).map_err(|e| BadCidr {
                text: text.to_owned(),
                problem: match e {
                    NetworkSyntax::NotAnAddress => {
                        "expected an address such as 10.0.0.0/8 or 2001:db8::/32"
                    }
                    NetworkSyntax::PrefixOutOfRange { .. } => {
                        "the prefix length must be 0 to 32 (IPv4) or 128 (IPv6)"
                    }
                },
            })?;
        Ok(Cidr {
            network: mask(addr, prefix_len),
            prefix_len,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

impl Cidr {
    /// Whether `addr` is in this network (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix_len) == self.network
    }
}

/// Parses a comma-separated list of CIDR networks (the environment variable and flag form).
pub fn parse_list(text: &str) -> Result<Vec<Cidr>, BadCidr> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::parse)
        .collect()
}

/// Whether `addr` is one of the trusted proxies.
fn trusted(proxies: &[Cidr], addr: IpAddr) -> bool {
    proxies.iter().any(|c| c.contains(addr))
}

/// Most entries of a forwarding chain looked at (from the right).
const MAX_HOPS: usize = 64;

/// The client address of a request that arrived from `peer` with `headers`: `peer` itself
/// unless it is a trusted proxy; then the right-most address of the forwarding chain that is
/// not a trusted proxy. `X-Forwarded-For` is read when present (what most proxies write),
/// else `Forwarded`. An entry that is not an address (`unknown`, an obfuscated name, garbage)
/// stops the walk: the client is then the proxy that reported it. A chain of trusted
/// proxies only gives its left-most address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(proxies, peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    let mut reporter = peer;
    for entry in chain.iter().rev().take(MAX_HOPS) {
        match entry {
            Some(addr) if trusted(proxies, *addr) => reporter = *addr,
            Some(addr) => return *addr,
            None => return reporter,
        }
    }
    reporter
}

/// The forwarding chain, left to right: each entry's address, `None` for one that is not one.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<&str> = header_values(headers, "x-forwarded-for");
    if !xff.is_empty() {
        return xff
            .iter()
            .flat_map(|v| v.split(','))
            .map(|entry| parse_node(entry.trim()))
            .collect();
    }
    header_values(headers, "forwarded")
        .iter()
        .flat_map(|v| split_outside_quotes(v, ','))
        .map(|element| {
            split_outside_quotes(element, ';')
                .into_iter()
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| parse_node(value.trim().trim_matches('"')))
        })
        .collect()
}

/// Every value of header `name`; a value that is not visible ASCII counts as one bad entry.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect()
}

/// `text` split at `sep`, except inside double quotes.
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr.to_canonical());
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_mask_and_match() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        let one: Cidr = "192.0.2.5".parse().unwrap();
        assert!(one.contains(ip("192.0.2.5")) && !one.contains(ip("192.0.2.6")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::9")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("2001:db8::1")));
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert_eq!(
            parse_list(" 10.0.0.0/8, ::1 ,").unwrap(),
            vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
        );
    }

    #[test]
    fn headers_count_only_from_a_trusted_peer_and_from_the_right() {
        let proxies = parse_list("10.0.0.0/8").unwrap();
        let spoofed = headers(&[("x-forwarded-for", "198.51.100.9")]);
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.5"), &spoofed, &proxies),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(ip("203.0.113.5"), &spoofed, &[]),
            ip("203.0.113.5")
        );
        // Trusted peer: the right-most untrusted entry, not the client's left-most one.
        let chain = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.9, 10.0.0.7")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &chain, &proxies),
            ip("198.51.100.9")
        );
        // Several headers are one list; ports and brackets are dropped.
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "[2001:db8::5]:443"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &split, &proxies),
            ip("2001:db8::5")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &proxies),
            ip("10.0.0.1")
        );
        // Garbage stops the walk at the proxy that reported it.
        let garbage = headers(&[("x-forwarded-for", "198.51.100.9, nonsense, 10.0.0.7")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &garbage, &proxies),
            ip("10.0.0.7")
        );
        // Only trusted entries: the left-most.
        let inner = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &inner, &proxies), ip("10.9.9.9"));
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &chain, &proxies),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn rfc7239_forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxies = parse_list("10.0.0.0/8").unwrap();
        let forwarded = headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https, For=\"[2001:db8:cafe::17]:4711\";by=10.0.0.2, for=10.0.0.7",
        )]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &forwarded, &proxies),
            ip("2001:db8:cafe::17")
        );
        let quoted = headers(&[("forwarded", "for=\"192.0.2.60:8080\";proto=\"a,b\"")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &quoted, &proxies),
            ip("192.0.2.60")
        );
        let hidden = headers(&[("forwarded", "for=198.51.100.1, for=_hidden")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &hidden, &proxies), ip("10.0.0.1"));
        // With both headers, X-Forwarded-For wins (what most proxies append to).
        let both = headers(&[
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &both, &proxies),
            ip("198.51.100.9")
        );
    }
}
