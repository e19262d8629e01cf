//! Which resolved addresses credgate may dial.
//!
//! An agent that can make the proxy connect to loopback, the pod network or a
//! cloud metadata endpoint can reach the admin API, other services' secrets,
//! or instance credentials. So the address is checked after resolution, on
//! the exact address that is then dialled, and only a rule that says
//! `allow_private: true` opens the special ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far a request may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressPolicy {
    /// Public unicast addresses only (the default).
    PublicOnly,
    /// Any unicast address, including loopback and private ranges.
    AllowPrivate,
    /// Loopback only: a credential is about to travel in cleartext, which is
    /// acceptable only when it never leaves the machine.
    LoopbackOnly,
}

/// What kind of address this is, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    /// Anything not below: public unicast, and the documentation ranges
    /// (TEST-NET, 2001:db8::/32), which reach nothing inside a network.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// Private, CGNAT, link-local (including metadata), unique-local and
    /// similar ranges that reach inside the network.
    Internal,
    /// Unspecified, multicast, broadcast, reserved: never a destination.
    Never,
}

impl AddressPolicy {
    /// Whether dialling `ip` is allowed under this policy.
    pub(crate) fn permits(self, ip: IpAddr) -> bool {
        match (self, classify(ip)) {
            (_, AddressClass::Never) => false,
            (AddressPolicy::PublicOnly, class) => class == AddressClass::Public,
            (AddressPolicy::AllowPrivate, _) => true,
            (AddressPolicy::LoopbackOnly, _) => is_plain_loopback(ip),
        }
    }
}

/// Loopback in its plain forms only: 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104.
/// NAT64 and 6to4 forms that embed 127.x leave the machine through a gateway,
/// so they must not carry a cleartext credential.
fn is_plain_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Classifies an address, looking through IPv4-mapped, NAT64 and 6to4 forms
/// so `::ffff:127.0.0.1` is loopback like `127.0.0.1`.
pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        return AddressClass::Never;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let internal = ip.is_private()
        || ip.is_link_local() // 169.254/16, includes the cloud metadata address
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)); // benchmarking 198.18/15
    if internal {
        AddressClass::Internal
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_unspecified() || ip.is_multicast() {
        return AddressClass::Never;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 destination.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        ));
    }
    if seg[0] == 0x2002 {
        return classify_v4(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    // IPv4-compatible (deprecated ::a.b.c.d) also reaches IPv4 destinations.
    if seg[0..6] == [0, 0, 0, 0, 0, 0] {
        return AddressClass::Never;
    }
    let internal = (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254)
        || (seg[0] & 0xffc0) == 0xfe80 // link-local
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]); // discard-only
    if internal {
        AddressClass::Internal
    } else {
        AddressClass::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges_that_matter() {
        assert_eq!(class("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("169.254.169.254"), AddressClass::Internal);
        assert_eq!(class("::ffff:169.254.169.254"), AddressClass::Internal);
        assert_eq!(class("fd00:ec2::254"), AddressClass::Internal);
        assert_eq!(class("10.1.2.3"), AddressClass::Internal);
        assert_eq!(class("172.16.0.1"), AddressClass::Internal);
        assert_eq!(class("192.168.1.1"), AddressClass::Internal);
        assert_eq!(class("100.64.0.1"), AddressClass::Internal);
        assert_eq!(class("fe80::1"), AddressClass::Internal);
        assert_eq!(class("64:ff9b::7f00:1"), AddressClass::Loopback);
        assert_eq!(class("2002:7f00:1::"), AddressClass::Loopback);
        assert_eq!(class("0.0.0.0"), AddressClass::Never);
        assert_eq!(class("::"), AddressClass::Never);
        assert_eq!(class("224.0.0.1"), AddressClass::Never);
        assert_eq!(class("93.184.215.14"), AddressClass::Public);
        assert_eq!(class("203.0.113.80"), AddressClass::Public);
        assert_eq!(class("2606:4700::1111"), AddressClass::Public);
    }

    #[test]
    fn policies() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        let public: IpAddr = "1.1.1.1".parse().unwrap();
        assert!(!AddressPolicy::PublicOnly.permits(lo));
        assert!(!AddressPolicy::PublicOnly.permits(private));
        assert!(AddressPolicy::PublicOnly.permits(public));
        assert!(AddressPolicy::AllowPrivate.permits(lo));
        assert!(AddressPolicy::LoopbackOnly.permits(lo));
        assert!(!AddressPolicy::LoopbackOnly.permits(public));
        assert!(!AddressPolicy::AllowPrivate.permits("0.0.0.0".parse().unwrap()));
        assert!(AddressPolicy::LoopbackOnly.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!AddressPolicy::LoopbackOnly.permits("64:ff9b::7f00:1".parse().unwrap()));
        assert!(!AddressPolicy::LoopbackOnly.permits("2002:7f00:1::".parse().unwrap()));
    }
}
