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
}
