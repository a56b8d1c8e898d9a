//! Which local addresses become host candidates.

use std::net::{IpAddr, SocketAddr};

use crate::config::BindPolicy;

/// At most this many sockets per connection: a host with dozens of addresses (containers,
/// VPNs) would otherwise multiply ICE checks for nothing.
pub(crate) const MAX_HOST_ADDRS: usize = 8;

/// The addresses to bind, in preference order (IPv4 first, then IPv6), as `addr:0` unless the
/// policy fixed a port.
pub(crate) fn bind_addrs(
    policy: &BindPolicy,
    include_loopback: bool,
) -> std::io::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = match policy {
        BindPolicy::Addrs(addrs) => addrs
            .iter()
            .copied()
            .filter(|a| include_loopback || !a.ip().is_loopback())
            .collect(),
        BindPolicy::AllInterfaces => {
            let ips = if_addrs::get_if_addrs()?
                .into_iter()
                .filter(|i| i.is_oper_up() || i.is_loopback())
                .map(|i| i.ip());
            select_ips(ips, include_loopback)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect()
        }
    };
    out.dedup();
    out.truncate(MAX_HOST_ADDRS);
    Ok(out)
}

/// Filters interface addresses down to those a peer could reach.
fn select_ips(ips: impl Iterator<Item = IpAddr>, include_loopback: bool) -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in ips {
        if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !include_loopback) {
            continue;
        }
        match ip {
            IpAddr::V4(a) if a.is_link_local() => {}
            IpAddr::V4(_) => v4.push(ip),
            // Link-local IPv6 needs a scope id that means nothing on the peer's machine.
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {}
            IpAddr::V6(_) => v6.push(ip),
        }
    }
    v4.sort();
    v4.dedup();
    v6.sort();
    v6.dedup();
    v4.extend(v6);
    v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_reachable_addresses_ipv4_first() {
        let ips = [
            "fe80::1",
            "2001:db8::5",
            "127.0.0.1",
            "::1",
            "192.168.1.7",
            "169.254.3.3",
            "0.0.0.0",
            "224.0.0.1",
            "192.168.1.7",
        ]
        .iter()
        .map(|s| s.parse::<IpAddr>().unwrap());
        let got = select_ips(ips.clone(), false);
        let want: Vec<IpAddr> = ["192.168.1.7", "2001:db8::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        let with_lo = select_ips(ips, true);
        assert_eq!(with_lo.len(), 4);
        assert!(with_lo.contains(&"127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn explicit_addresses_respect_the_loopback_switch() {
        let lo = BindPolicy::Addrs(vec!["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(bind_addrs(&lo, true).unwrap().len(), 1);
        assert!(bind_addrs(&lo, false).unwrap().is_empty());
    }

    #[test]
    fn enumerating_this_machine_works() {
        // The machine always has a loopback interface.
        let all = bind_addrs(&BindPolicy::AllInterfaces, true).unwrap();
        assert!(all.iter().any(|a| a.ip().is_loopback()), "{all:?}");
        let no_lo = bind_addrs(&BindPolicy::AllInterfaces, false).unwrap();
        assert!(no_lo.iter().all(|a| !a.ip().is_loopback()));
    }
}
