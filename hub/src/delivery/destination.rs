//! Where webhooks may go. A webhook URL is chosen by whoever edits the registry, and the
//! hub sends from inside the operator's network: without a guard, an endpoint could
//! point the hub at its own admin API, a database, or the cloud metadata service at
//! 169.254.169.254. So, like Svix, the hub refuses by default every destination in a
//! special-purpose range (loopback, private, link-local, shared, documentation,
//! multicast, reserved…), unless the configuration's allow-list
//! (`delivery.allowed_destinations`) names a network that contains it: that is how
//! tests and on-premises receivers on private addresses are reached.
//!
//! The check runs when a registry document is applied (literal addresses, and names
//! that resolve then) and again at every attempt: a literal address is checked before
//! the request is built, and names are resolved by [`GuardedResolver`], which refuses
//! to hand the HTTP client an address the policy does not allow — so a name that later
//! resolves to a refused address (DNS changes, rebinding) fails the attempt instead of
//! reaching it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A special-purpose range and what it is for, in words for an operator.
struct Special {
    net: IpNet,
    what: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, what: &'static str) -> Special {
    Special {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)),
        what,
    }
}

const fn v6(segments: [u16; 8], prefix: u8, what: &'static str) -> Special {
    let [a, b, c, d, e, f, g, h] = segments;
    Special {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            prefix,
        )),
        what,
    }
}

/// Refused unless allowed; the first match names the range (narrower ranges first).
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are checked as the IPv4 address.
const SPECIAL: &[Special] = &[
    v4(0, 0, 0, 0, 8, "a \"this network\" address"),
    v4(10, 0, 0, 0, 8, "a private address"),
    v4(100, 64, 0, 0, 10, "a shared (carrier-grade NAT) address"),
    v4(127, 0, 0, 0, 8, "a loopback address"),
    v4(
        169,
        254,
        0,
        0,
        16,
        "a link-local address (where cloud metadata services answer)",
    ),
    v4(172, 16, 0, 0, 12, "a private address"),
    v4(192, 0, 0, 0, 24, "an IETF protocol assignment address"),
    v4(192, 0, 2, 0, 24, "a documentation address"),
    v4(192, 88, 99, 0, 24, "a 6to4 relay address"),
    v4(192, 168, 0, 0, 16, "a private address"),
    v4(198, 18, 0, 0, 15, "a benchmarking address"),
    v4(198, 51, 100, 0, 24, "a documentation address"),
    v4(203, 0, 113, 0, 24, "a documentation address"),
    v4(224, 0, 0, 0, 4, "a multicast address"),
    v4(255, 255, 255, 255, 32, "the broadcast address"),
    v4(240, 0, 0, 0, 4, "a reserved address"),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "the unspecified address"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "a loopback address"),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        96,
        "an IPv4-compatible address (deprecated)",
    ),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "a NAT64 address"),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "a local NAT64 address",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "a discard-only address"),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "a documentation address",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "an IETF protocol assignment address (Teredo, ORCHID…)",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "a 6to4 address"),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "a documentation address"),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "a unique-local (private) address",
    ),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "a link-local address"),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "a site-local address (deprecated)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "a multicast address"),
];

/// A destination the policy refuses: the host as written in the URL, and the address it
/// is or resolves to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DestinationRefused {
    /// The URL's host, e.g. `localhost` or `10.0.0.7`.
    pub host: String,
    /// The refused address.
    pub address: IpAddr,
    /// The special-purpose range it is in.
    pub range: IpNet,
    /// What that range is, e.g. `a loopback address`.
    pub what: &'static str,
}

impl std::fmt::Display for DestinationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let literal = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| canonical(ip) == self.address);
        if literal {
            write!(f, "{} is {} ({})", self.address, self.what, self.range)?;
        } else {
            write!(
                f,
                "`{}` resolves to {}, {} ({})",
                self.host, self.address, self.what, self.range
            )?;
        }
        write!(
            f,
            "; webhooks are not sent there unless delivery.allowed_destinations lists a network containing it"
        )
    }
}

/// Which destinations webhooks may reach: everything outside the special-purpose
/// ranges, plus the configured allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allowed: Vec<IpNet>,
}

/// The address a URL's host is, when it is one (the parser has already normalised
/// forms such as `http://2130706433/` to `127.0.0.1`).
fn literal_host(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

/// IPv4-mapped IPv6 addresses stand for their IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

impl DestinationPolicy {
    /// The default ranges refused, except within `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Whether `address` may be reached; `host` is what the URL names (for the error).
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), DestinationRefused> {
        let address = canonical(address);
        if self.allowed.iter().any(|net| net.contains(&address)) {
            return Ok(());
        }
        match SPECIAL.iter().find(|s| s.net.contains(&address)) {
            Some(special) => Err(DestinationRefused {
                host: host.to_owned(),
                address,
                range: special.net,
                what: special.what,
            }),
            None => Ok(()),
        }
    }

    /// Checks every address a name resolved to: one refused address refuses the name.
    pub fn check_all(
        &self,
        host: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), DestinationRefused> {
        addresses
            .into_iter()
            .try_for_each(|address| self.check(host, address))
    }

    /// Checks a URL whose host is a literal address (`http://10.0.0.7/`,
    /// `http://[::1]/`); names pass (they are checked when resolved).
    pub fn check_literal(&self, url: &Url) -> Result<(), DestinationRefused> {
        match literal_host(url) {
            Some(address) => self.check(url.host_str().unwrap_or_default(), address),
            None => Ok(()),
        }
    }

    /// The check made when a registry document is applied: a literal address, or the
    /// addresses a name resolves to within `within`. A name that does not resolve (yet)
    /// passes: it is checked again at every attempt.
    pub async fn check_url(&self, url: &Url, within: Duration) -> Result<(), DestinationRefused> {
        self.check_literal(url)?;
        let Some(name) = url.host_str().filter(|_| literal_host(url).is_none()) else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(0);
        match tokio::time::timeout(within, tokio::net::lookup_host((name, port))).await {
            Ok(Ok(addresses)) => self.check_all(name, addresses.map(|a| a.ip())),
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    /// A DNS resolver for the webhook HTTP client that enforces this policy.
    pub fn resolver(self) -> GuardedResolver {
        GuardedResolver {
            policy: Arc::new(self),
        }
    }
}

/// Resolves names with the system resolver and refuses, as a whole, a name any of whose
/// addresses the policy refuses: the HTTP client never sees such an address.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<DestinationPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy.check_all(&host, addresses.iter().map(SocketAddr::ip))?;
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The refusal behind a failed request, if the guard caused it.
pub fn refusal_in<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a DestinationRefused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<DestinationRefused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn refused(policy: &DestinationPolicy, address: &str) -> Option<&'static str> {
        policy.check(address, ip(address)).err().map(|r| r.what)
    }

    #[test]
    fn special_ranges_are_refused_by_default() {
        let policy = DestinationPolicy::default();
        for address in [
            "0.1.2.3",
            "10.0.0.7",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.2",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(
                refused(&policy, address).is_some(),
                "{address} must be refused"
            );
        }
        assert_eq!(
            refused(&policy, "169.254.169.254"),
            Some("a link-local address (where cloud metadata services answer)")
        );
        assert_eq!(
            refused(&policy, "255.255.255.255"),
            Some("the broadcast address")
        );
        assert_eq!(
            refused(&policy, "::ffff:10.1.2.3"),
            Some("a private address")
        );
    }

    #[test]
    fn public_addresses_pass() {
        let policy = DestinationPolicy::default();
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.20.0.1",
            "203.0.114.1",
            "223.255.255.255",
            "2400:cb00::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(refused(&policy, address), None, "{address} must pass");
        }
    }

    #[test]
    fn the_allow_list_opens_only_its_networks() {
        let nets = ["127.0.0.0/8", "10.20.0.0/16", "fd00::/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let policy = DestinationPolicy::new(nets);
        assert_eq!(refused(&policy, "127.0.0.1"), None);
        assert_eq!(refused(&policy, "::ffff:127.0.0.1"), None, "mapped as IPv4");
        assert_eq!(refused(&policy, "10.20.3.4"), None);
        assert_eq!(refused(&policy, "fd00::5"), None);
        assert_eq!(refused(&policy, "10.21.0.1"), Some("a private address"));
        assert_eq!(refused(&policy, "::1"), Some("a loopback address"));
        assert!(refused(&policy, "169.254.169.254").is_some());
    }

    #[test]
    fn literal_urls_are_checked_names_are_left_to_the_resolver() {
        let policy = DestinationPolicy::default();
        let check = |url: &str| {
            Url::parse(url)
                .ok()
                .and_then(|u| policy.check_literal(&u).err())
                .map(|e| e.to_string())
        };
        assert_eq!(
            check("http://169.254.169.254/latest/meta-data").as_deref(),
            Some(
                "169.254.169.254 is a link-local address (where cloud metadata services answer) \
                 (169.254.0.0/16); webhooks are not sent there unless \
                 delivery.allowed_destinations lists a network containing it"
            )
        );
        assert!(check("http://[::1]:8080/hook").is_some());
        // The WHATWG parser reads a bare number as an IPv4 address.
        assert!(check("http://2130706433/hook").is_some());
        assert_eq!(check("https://care.example.jp/hook"), None);
        assert_eq!(check("http://localhost:9/hook"), None);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_apply() -> Result<(), url::ParseError> {
        let url = Url::parse("http://localhost:9/hook")?;
        let refused = DestinationPolicy::default()
            .check_url(&url, Duration::from_secs(5))
            .await
            .err();
        assert!(
            refused
                .as_ref()
                .is_some_and(|r| r.host == "localhost" && r.what == "a loopback address"),
            "{refused:?}"
        );
        assert!(
            refused
                .map(|r| r.to_string())
                .is_some_and(|m| m.starts_with("`localhost` resolves to ")),
            "names the host"
        );
        let allowed = DestinationPolicy::new(
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        );
        assert_eq!(
            allowed.check_url(&url, Duration::from_secs(5)).await,
            Ok(())
        );
        // A name that does not resolve is left to the check at each attempt.
        let unknown = Url::parse("https://no-such-host.invalid/hook")?;
        assert_eq!(
            DestinationPolicy::default()
                .check_url(&unknown, Duration::from_secs(5))
                .await,
            Ok(())
        );
        Ok(())
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_resolving_to_loopback() {
        let resolver = DestinationPolicy::default().resolver();
        let name = "localhost".parse::<Name>();
        let Ok(name) = name else {
            panic!("localhost is a name");
        };
        let error = resolver.resolve(name).await.err();
        let refusal = error.as_deref().and_then(|e| refusal_in(e));
        assert!(
            refusal.is_some_and(|r| r.address.is_loopback()),
            "{error:?}"
        );
    }
}
