//! IP networks (`10.0.0.0/8`, `::1/128`) for `trusted_proxies`: parsing, with the mistakes an
//! operator makes named in the error, and membership.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for an IPv4 peer) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(net.to_bits().into(), ip.to_bits().into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => same_prefix(
                net.to_bits(),
                ip.to_ipv6_mapped().to_bits(),
                128,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let host_bits = width - u32::from(prefix);
    (a ^ b).checked_shr(host_bits).unwrap_or(0) == 0
}

impl FromStr for IpNet {
    type Err = String;

    /// `10.0.0.0/8`, `::1/128`, or a bare address (a network of one). Bits set past the prefix
    /// are refused: `10.0.0.1/8` is more likely a typo than a network.
    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!(
                "{s:?} is not an IP address or network \
                 (e.g. \"10.0.0.0/8\", \"::1/128\", \"127.0.0.1\")"
            )
        })?;
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => width,
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "{s:?}: the prefix after \"/\" must be a number from 0 to {width}"
                ));
            }
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => {
                    return Err(format!(
                        "{s:?}: prefix /{p} is longer than the {width} bits of the address"
                    ));
                }
            },
        };
        let net = IpNet { addr, prefix };
        let masked = net.network();
        if masked != addr {
            return Err(format!(
                "{s:?} has bits set past the prefix; did you mean \"{masked}/{prefix}\"?"
            ));
        }
        Ok(net)
    }
}

impl IpNet {
    /// The address with every bit past the prefix cleared.
    fn network(&self) -> IpAddr {
        let keep = |width: u32| match u32::from(self.prefix) {
            0 => 0,
            p => u128::MAX << (128 - p) >> (128 - width),
        };
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & keep(32) as u32)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & keep(128))),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_networks_parse_and_contain() {
        assert_eq!(
            net("10.0.0.0/8"),
            IpNet {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert_eq!(
            net("::1"),
            IpNet {
                addr: ip("::1"),
                prefix: 128
            }
        );
        assert_eq!(
            net("192.0.2.1"),
            IpNet {
                addr: ip("192.0.2.1"),
                prefix: 32
            }
        );
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");

        let ten = net("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")) && ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")) && !ten.contains(ip("9.255.255.255")));
        assert!(
            ten.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!ten.contains(ip("::ffff:11.1.2.3")));
        assert!(
            !ten.contains(ip("::a01:203")),
            "IPv4-compatible is not mapped"
        );
        let host = net("127.0.0.1");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        assert!(host.contains(ip("::ffff:127.0.0.1")));
        assert!(
            net("0.0.0.0/0").contains(ip("203.0.113.9"))
                && !net("0.0.0.0/0").contains(ip("2001:db8::1"))
        );
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(
            net("::/0").contains(ip("203.0.113.9")),
            "an IPv4 peer is ::ffff:a.b.c.d to IPv6"
        );
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let loopback6 = net("::1/128");
        assert!(loopback6.contains(ip("::1")) && !loopback6.contains(ip("127.0.0.1")));
        let mapped = net("::ffff:10.0.0.0/104");
        assert!(mapped.contains(ip("10.9.9.9")) && mapped.contains(ip("::ffff:10.9.9.9")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        assert!(
            net("192.168.1.0/31").contains(ip("192.168.1.1"))
                && !net("192.168.1.0/31").contains(ip("192.168.1.2"))
        );
    }

    #[test]
    fn bad_networks_say_why() {
        let e = |s: &str| s.parse::<IpNet>().unwrap_err();
        assert_eq!(
            e("10.0.0.0/33"),
            "\"10.0.0.0/33\": prefix /33 is longer than the 32 bits of the address"
        );
        assert_eq!(
            e("::/129"),
            "\"::/129\": prefix /129 is longer than the 128 bits of the address"
        );
        assert_eq!(
            e("::/300"),
            "\"::/300\": prefix /300 is longer than the 128 bits of the address"
        );
        assert_eq!(
            e("10.0.0.0/"),
            "\"10.0.0.0/\": the prefix after \"/\" must be a number from 0 to 32"
        );
        assert_eq!(
            e("10.0.0.0/+8"),
            "\"10.0.0.0/+8\": the prefix after \"/\" must be a number from 0 to 32"
        );
        assert_eq!(
            e("10.0.0.1/8"),
            "\"10.0.0.1/8\" has bits set past the prefix; did you mean \"10.0.0.0/8\"?"
        );
        assert_eq!(
            e("fd00::1/8"),
            "\"fd00::1/8\" has bits set past the prefix; did you mean \"fd00::/8\"?"
        );
        assert!(e("localhost").starts_with("\"localhost\" is not an IP address or network"));
        assert!(e("10.0.0/8").starts_with("\"10.0.0/8\" is not an IP address or network"));
    }
}
