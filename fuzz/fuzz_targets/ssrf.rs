//! The SSRF classifier: every address the standard library calls loopback,
//! private, link-local, multicast or unspecified is refused, also when
//! spelled as an IPv4-mapped IPv6 address or reached through a URL host in
//! decimal, hex or octal notation.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use opsrunner::handlers::ssrf::classify;

fn must_refuse_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_multicast()
        || ip.is_unspecified() || ip.is_broadcast()
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let v4 = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
        if must_refuse_v4(v4) {
            assert!(classify(IpAddr::V4(v4)).is_some(), "{v4} allowed");
            assert!(classify(IpAddr::V6(v4.to_ipv6_mapped())).is_some(), "mapped {v4} allowed");
        }
    }
    if data.len() >= 16 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&data[..16]);
        let v6 = Ipv6Addr::from(b);
        if v6.is_loopback() || v6.is_multicast() || v6.is_unspecified() {
            assert!(classify(IpAddr::V6(v6)).is_some(), "{v6} allowed");
        }
        let _ = classify(IpAddr::V6(v6));
    }
    if let Ok(host) = std::str::from_utf8(data)
        && let Ok(url) = url::Url::parse(&format!("http://{host}/"))
        && let Some(url::Host::Ipv4(v4)) = url.host()
        && must_refuse_v4(v4)
    {
        assert!(classify(IpAddr::V4(v4)).is_some(), "{host} -> {v4} allowed");
    }
});
