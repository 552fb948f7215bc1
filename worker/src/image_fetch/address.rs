//! Which addresses a client image may come from. A job's `image_url` is the client's, so
//! fetching it is a request the client makes from inside our network: without these rules a
//! link (or a redirect, or a DNS answer) to `127.0.0.1`, `10.0.0.5` or the cloud metadata
//! server reaches services that trust our network, and its answer would come back as an
//! "image". Only public unicast addresses are fetched; loopback and private ones only when
//! `AIPROD_IMAGE_FETCH_ALLOW_PRIVATE` names them (tests, local development), and the metadata
//! server and addresses no server can have never.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, as far as fetching from it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reach {
    /// A public unicast address: fetched.
    Public,
    /// Loopback, private, link-local or shared: fetched only when allowed by name. The words
    /// say which, for the job's error.
    Internal(&'static str),
    /// The metadata server, or an address no image server can have: never fetched.
    Never(&'static str),
}

/// The metadata server's address on Google Cloud, AWS and Azure alike.
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Host names of the metadata server that need no DNS to be dangerous: GKE resolves them
/// to the metadata address, and a resolver we do not control may answer anything.
const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata"];

/// Whether `host` names the metadata server outright.
pub(super) fn is_metadata_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_NAMES.contains(&host.as_str())
}

/// What `ip` is. IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) are judged by that address,
/// since that is where the packets go.
pub(super) fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => reach_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => reach_v4(v4),
            None => reach_v6(v6),
        },
    }
}

fn reach_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, c, _] = ip.octets();
    if ip == METADATA_V4 {
        Reach::Never("the cloud metadata server")
    } else if a == 0 {
        // 0.0.0.0/8: on Linux a connection to 0.0.0.0 reaches this host's own services.
        Reach::Never("an unspecified address")
    } else if ip.is_broadcast() {
        Reach::Never("the broadcast address")
    } else if ip.is_multicast() {
        Reach::Never("a multicast address")
    } else if a >= 240 {
        Reach::Never("a reserved address")
    } else if ip.is_loopback() {
        Reach::Internal("a loopback address")
    } else if ip.is_private() {
        Reach::Internal("a private address")
    } else if ip.is_link_local() {
        Reach::Internal("a link-local address")
    } else if a == 100 && (b & 0xc0) == 64 {
        Reach::Internal("a shared (carrier-grade NAT) address")
    } else if (a, b, c) == (192, 0, 0) || (a == 198 && (b & 0xfe) == 18) {
        Reach::Internal("a special-purpose address")
    } else {
        Reach::Public
    }
}

fn reach_v6(ip: Ipv6Addr) -> Reach {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Reach::Never("an unspecified address")
    } else if ip.is_multicast() {
        Reach::Never("a multicast address")
    } else if ip.is_loopback() {
        Reach::Internal("a loopback address")
    } else if first & 0xfe00 == 0xfc00 {
        Reach::Internal("a private (unique local) address")
    } else if first & 0xffc0 == 0xfe80 {
        Reach::Internal("a link-local address")
    } else if first & 0xffc0 == 0xfec0 {
        Reach::Internal("a site-local address")
    } else {
        Reach::Public
    }
}

/// The IPv4 address an IPv6 address stands for, in the forms that route to one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low()),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, not compatible forms.
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => Some(low()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
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

    fn r(s: &str) -> Reach {
        reach(s.parse().expect("an address"))
    }

    #[test]
    fn public_addresses_are_fetched() {
        for ip in [
            "8.8.8.8",
            "142.250.72.14",
            "2607:f8b0:4004:c1b::64",
            "100.128.0.1",
        ] {
            assert_eq!(r(ip), Reach::Public, "{ip}");
        }
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            // IPv4 in IPv6 clothing.
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:c0a8:0101::1",
        ] {
            assert!(matches!(r(ip), Reach::Internal(_)), "{ip}: {:?}", r(ip));
        }
    }

    #[test]
    fn the_metadata_server_and_impossible_addresses_are_never_fetched() {
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "::ffff:a9fe:a9fe",
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "ff02::1",
        ] {
            assert!(matches!(r(ip), Reach::Never(_)), "{ip}: {:?}", r(ip));
        }
        for name in [
            "metadata.google.internal",
            "METADATA.google.internal.",
            "metadata",
        ] {
            assert!(is_metadata_name(name), "{name}");
        }
        assert!(!is_metadata_name("metadata.example.com"));
    }
}
