//! The SSRF guard for outgoing HTTP: which addresses a webhook may reach.
//!
//! Refused unless allow-listed: loopback, private (RFC 1918, IPv6 ULA),
//! link-local (including cloud metadata at 169.254.169.254), CGNAT,
//! multicast, broadcast, unspecified, reserved and documentation ranges,
//! IPv4-mapped and -compatible IPv6, and NAT64 forms of refused IPv4.
//! Odd spellings (`2130706433`, `0x7f.1`, `0177.0.0.1`) are normalised by the
//! URL parser before they reach this check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, or `None` when it is a public unicast address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "cloud metadata"),
        ([0, 0, 0, 0], 8, "unspecified / this network"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 168, 0, 0], 16, "private"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved / broadcast"),
    ];
    TABLE
        .iter()
        .find(|(net, p, _)| in_v4(ip, *net, *p))
        .map(|(_, _, why)| *why)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some("IPv4-mapped IPv6");
    }
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible IPv6");
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return classify_v4(v4).map(|_| "NAT64 form of a refused IPv4 address");
    }
    const TABLE: &[(Ipv6Addr, u32, &str)] = &[
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "unique local (private)",
        ),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "documentation",
        ),
        (
            Ipv6Addr::new(0x0100, 0, 0, 0, 0, 0, 0, 0),
            64,
            "discard-only",
        ),
    ];
    TABLE
        .iter()
        .find(|(net, p, _)| in_v6(ip, *net, *p))
        .map(|(_, _, why)| *why)
}

/// An allow-list entry: an address or a CIDR block, e.g. `10.1.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u32,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix"))?,
        };
        Ok(Self { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => in_v4(i, n.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(i)) => in_v6(i, n, self.prefix),
            _ => false,
        }
    }
}

/// `Ok` when `ip` may be contacted: public, or allow-listed.
pub fn check(ip: IpAddr, allow: &[Cidr]) -> Result<(), String> {
    if allow.iter().any(|c| c.contains(ip)) {
        return Ok(());
    }
    match classify(ip) {
        None => Ok(()),
        Some(why) => Err(format!(
            "destination address refused by the SSRF guard ({why})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host of a URL as the handler sees it after parsing.
    fn host_ip(url: &str) -> IpAddr {
        match url::Url::parse(url).unwrap().host().unwrap() {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(d) => panic!("{url} parsed as domain {d}"),
        }
    }

    #[test]
    fn the_ssrf_table_refuses_every_internal_spelling() {
        let refused = [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1/",
            "http://100.64.0.1/",
            "http://100.127.255.254/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fd00:ec2::254]/",
            "http://[fc00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
        ];
        for url in refused {
            let ip = host_ip(url);
            assert!(check(ip, &[]).is_err(), "{url} ({ip}) should be refused");
        }
        for url in [
            "http://93.184.216.34/",
            "http://8.8.8.8/",
            "http://[2606:4700::1111]/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
        ] {
            let ip = host_ip(url);
            assert!(check(ip, &[]).is_ok(), "{url} ({ip}) should be allowed");
        }
    }

    #[test]
    fn an_allow_list_entry_opens_exactly_its_range() {
        let allow: Vec<Cidr> = ["127.0.0.1", "10.1.2.0/24"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(check("127.0.0.1".parse().unwrap(), &allow).is_ok());
        assert!(check("127.0.0.2".parse().unwrap(), &allow).is_err());
        assert!(check("10.1.2.77".parse().unwrap(), &allow).is_ok());
        assert!(check("10.1.3.1".parse().unwrap(), &allow).is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }
}
