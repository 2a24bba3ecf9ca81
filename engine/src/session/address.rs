//! Remote addresses as the session compares them: by host, the port ignored (SPEC.md §8.4).

/// The host part of a driver address: `"192.0.2.1:7946"` → `"192.0.2.1"`, `"[2001:db8::1]:80"`
/// → `"2001:db8::1"`; an address without a port (a bare IPv6 address, a simulator name) is
/// its own host.
pub(crate) fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host;
        }
    }
    match addr.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => addr,
    }
}

/// Whether `addr` is an IP address and port whose IP is unspecified (`0.0.0.0`, `[::]`): the
/// address a node listening on every interface binds, which no peer can dial (SPEC.md §8.12).
pub(crate) fn is_unspecified(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
}

/// The address to dial a peer at, from the `listen_addr` its HELLO announced and the remote
/// address of its connection (`conn_addr`): the announced one, unless its IP is unspecified;
/// then the connection's IP with the announced port (SPEC.md §8.12). `None` if that cannot be
/// made (the connection's address is no IP address and port).
pub(crate) fn dialable(announced: &str, conn_addr: &str) -> Option<String> {
    let Ok(mut announced_ip) = announced.parse::<std::net::SocketAddr>() else {
        return Some(announced.to_owned());
    };
    if !announced_ip.ip().is_unspecified() {
        return Some(announced.to_owned());
    }
    let seen = conn_addr.parse::<std::net::SocketAddr>().ok()?;
    if seen.ip().is_unspecified() {
        return None;
    }
    announced_ip.set_ip(seen.ip());
    Some(announced_ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_ignored() {
        assert_eq!(host_of("192.0.2.1:7946"), "192.0.2.1");
        assert_eq!(host_of("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(host_of("2001:db8::1"), "2001:db8::1");
        assert_eq!(host_of("n7"), "n7");
        assert_eq!(host_of("[broken"), "[broken");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn an_unspecified_listen_address_takes_the_connections_ip() {
        assert!(is_unspecified("0.0.0.0:7000") && is_unspecified("[::]:7000"));
        assert!(!is_unspecified("127.0.0.1:7000") && !is_unspecified("n7"));
        let seen = "192.0.2.9:50123";
        assert_eq!(
            dialable("0.0.0.0:7000", seen).as_deref(),
            Some("192.0.2.9:7000")
        );
        assert_eq!(
            dialable("[::]:7000", "[2001:db8::5]:4000").as_deref(),
            Some("[2001:db8::5]:7000")
        );
        assert_eq!(
            dialable("198.51.100.1:7000", seen).as_deref(),
            Some("198.51.100.1:7000")
        );
        assert_eq!(
            dialable("n3", "n4").as_deref(),
            Some("n3"),
            "simulator names pass"
        );
        assert_eq!(dialable("0.0.0.0:7000", "n4"), None);
    }
}
