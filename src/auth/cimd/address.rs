//! Which addresses a metadata document may be fetched from: public unicast only. Loopback,
//! private (RFC 1918, ULA), link-local (where cloud metadata services live), CGNAT, multicast,
//! documentation, benchmarking and reserved ranges are refused, as are IPv4 addresses written
//! inside IPv6 (mapped, compatible, NAT64, 6to4) that fall in them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` may not be fetched from, or `None` when it may. `loopback_ok` is the test switch.
pub fn refusal(ip: IpAddr, loopback_ok: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4, loopback_ok),
        IpAddr::V6(v6) => v6_refusal(v6, loopback_ok),
    }
}

fn v4_refusal(ip: Ipv4Addr, loopback_ok: bool) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return (!loopback_ok).then_some("a loopback address");
    }
    Some(match (a, b, c) {
        (0, _, _) => "a 'this network' address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (CGNAT) address",
        (169, 254, _) => "a link-local address (cloud metadata services live here)",
        (192, 0, 0) => "an IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn v6_refusal(ip: Ipv6Addr, loopback_ok: bool) -> Option<&'static str> {
    if ip.is_loopback() {
        return (!loopback_ok).then_some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    let s = ip.segments();
    // IPv4 inside IPv6: mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::/96.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_refusal(v4, loopback_ok);
    }
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return v4_refusal(v4, false).or(Some("an IPv4-embedding address"));
    }
    Some(match s[0] {
        0x2002 => "a 6to4 address",
        x if x & 0xfe00 == 0xfc00 => "a unique-local (private) address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xffc0 == 0xfec0 => "a site-local address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        0x2001 if s[1] == 0x0db8 => "a documentation address",
        0x2001 if s[1] < 0x0200 => "an IETF special-purpose address",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard address",
        // Global unicast is 2000::/3; anything else is unassigned.
        x if x & 0xe000 != 0x2000 => "an unassigned address",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_is_fetched() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2002:7f00:1::",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(refusal(ip, false).is_some(), "{bad} must be refused");
        }
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(refusal(ip, false), None, "{good}");
        }
        // The test switch opens loopback only.
        assert_eq!(refusal("127.0.0.1".parse().unwrap(), true), None);
        assert_eq!(refusal("::1".parse().unwrap(), true), None);
        assert!(refusal("10.0.0.1".parse().unwrap(), true).is_some());
        assert!(refusal("::ffff:10.0.0.1".parse().unwrap(), true).is_some());
    }
}
