//! Which IP addresses a worker may connect to for a document's URI.
//!
//! A URI is checked after DNS resolution, on the addresses the connection will really use: the
//! name in the URI says nothing about where it leads.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restricted {
    /// A cloud provider's instance metadata service (credentials live there).
    CloudMetadata,
    Loopback,
    /// RFC 1918 (and the deprecated IPv6 site-local range).
    Private,
    LinkLocal,
    /// IPv6 unique-local addresses (fc00::/7).
    UniqueLocal,
    /// Carrier-grade NAT shared space (100.64.0.0/10).
    SharedCgnat,
    Unspecified,
    Multicast,
    Broadcast,
    /// Documentation, benchmarking, reserved and special-purpose ranges.
    Reserved,
}

impl Restricted {
    /// Addresses an operator may open up with `--allow-private-networks`: unicast addresses of
    /// the worker's own networks. Metadata services, multicast and reserved ranges stay closed
    /// (only `--allow-uri-hosts` opens a host to everything).
    pub(crate) fn is_private_network(self) -> bool {
        matches!(
            self,
            Restricted::Loopback
                | Restricted::Private
                | Restricted::LinkLocal
                | Restricted::UniqueLocal
                | Restricted::SharedCgnat
        )
    }
}

impl fmt::Display for Restricted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restricted::CloudMetadata => "a cloud metadata address",
            Restricted::Loopback => "a loopback address",
            Restricted::Private => "a private network address",
            Restricted::LinkLocal => "a link-local address",
            Restricted::UniqueLocal => "a unique-local address",
            Restricted::SharedCgnat => "a carrier-grade NAT address",
            Restricted::Unspecified => "the unspecified address",
            Restricted::Multicast => "a multicast address",
            Restricted::Broadcast => "the broadcast address",
            Restricted::Reserved => "a reserved address",
        })
    }
}

/// Well-known metadata endpoints: AWS/GCP/Azure/OpenStack, AWS ECS tasks, Alibaba, Oracle.
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
/// AWS's IPv6 metadata endpoint (fd00:ec2::254).
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// `None` for a public unicast address, else what it is.
pub(crate) fn classify(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Restricted> {
    let [a, b, c, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        return Some(Restricted::CloudMetadata);
    }
    let kind = match (a, b, c) {
        (0, _, _) => Restricted::Unspecified, // "this network", 0.0.0.0 included
        (127, _, _) => Restricted::Loopback,
        (10, _, _) | (192, 168, _) => Restricted::Private,
        (172, 16..=31, _) => Restricted::Private,
        (169, 254, _) => Restricted::LinkLocal,
        (100, 64..=127, _) => Restricted::SharedCgnat,
        (224..=239, _, _) => Restricted::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Restricted::Broadcast,
        (240..=255, _, _) => Restricted::Reserved,
        // IETF protocol assignments, TEST-NET-1/2/3, benchmarking, 6to4 relay anycast.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (192, 88, 99) => {
            Restricted::Reserved
        }
        (198, 18..=19, _) => Restricted::Reserved,
        _ => return None,
    };
    Some(kind)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Restricted> {
    if ip == METADATA_V6 {
        return Some(Restricted::CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Restricted::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Restricted::Loopback);
    }
    // Forms that carry an IPv4 address reach that address: judge it instead.
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let kind = match s[0] {
        0xff00..=0xffff => Restricted::Multicast,
        0xfe80..=0xfebf => Restricted::LinkLocal,
        0xfec0..=0xfeff => Restricted::Private, // deprecated site-local
        0xfc00..=0xfdff => Restricted::UniqueLocal,
        // 2001:db8::/32 documentation, 2001::/23 special purpose (Teredo among them).
        0x2001 if s[1] == 0x0db8 || s[1] < 0x0200 => Restricted::Reserved,
        // ::/8 (what is left of it: the IPv4 forms were handled above) and 100::/64 discard.
        0x0000..=0x00ff => Restricted::Reserved,
        0x0100 if s[1..4] == [0, 0, 0] => Restricted::Reserved,
        _ => return None,
    };
    Some(kind)
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d),
/// NAT64 (64:ff9b::/96) or 6to4 (2002::/16) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<Restricted> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        use Restricted::*;
        for (addr, want) in [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.1.2", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.170.2", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("192.0.0.192", Some(CloudMetadata)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.254", Some(SharedCgnat)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.2.10", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("203.0.113.5", Some(Reserved)),
            // Public neighbours of the ranges above.
            ("8.8.8.8", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("192.169.0.1", None),
            ("11.0.0.1", None),
            ("223.255.255.255", None),
        ] {
            assert_eq!(kind(addr), want, "{addr}");
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        use Restricted::*;
        for (addr, want) in [
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Reserved)),
            ("2001:0:4136:e378::1", Some(Reserved)), // Teredo
            ("100::1", Some(Reserved)),
            // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms judge their IPv4 address.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::192.168.0.1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.4.4", None),
            ("2002:808:808::1", None),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ] {
            assert_eq!(kind(addr), want, "{addr}");
        }
    }

    #[test]
    fn only_own_network_ranges_count_as_private_networks() {
        use Restricted::*;
        for r in [Loopback, Private, LinkLocal, UniqueLocal, SharedCgnat] {
            assert!(r.is_private_network(), "{r}");
        }
        for r in [CloudMetadata, Unspecified, Multicast, Broadcast, Reserved] {
            assert!(!r.is_private_network(), "{r}");
        }
    }
}
