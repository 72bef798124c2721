//! Which sockets listen on a TCP port, read from the kernel's `/proc/net/tcp{,6}` tables: the
//! only way to see a stranger that joined our `SO_REUSEPORT` group.

use std::net::SocketAddr;

/// Inodes of the sockets in state LISTEN on `addr`'s port whose local address is `addr`'s or the
/// wildcard of its family (either would take connections meant for `addr`).
pub(crate) fn on_port(addr: SocketAddr) -> std::io::Result<Vec<u64>> {
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table)?;
    let ours = local_hex(addr);
    let wildcard = local_hex(SocketAddr::new(if addr.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() }, addr.port()));
    Ok(text.lines().skip(1).filter_map(parse_row).filter(|row| row.listening && (row.local == ours || row.local == wildcard)).map(|row| row.inode).collect())
}

/// The inode in a `/proc/self/fd` link of a socket: `socket:[12345]`.
pub(crate) fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

struct Row<'a> {
    local: &'a str,
    listening: bool,
    inode: u64,
}

/// One table row: `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …`.
fn parse_row(line: &str) -> Option<Row<'_>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(Row { local: fields.get(1)?, listening: *fields.get(3)? == "0A", inode: fields.get(9)?.parse().ok()? })
}

/// The kernel's spelling of a local address: the address as 32-bit words in host order, each
/// printed as 8 hex digits, then `:` and the port as 4 hex digits.
fn local_hex(addr: SocketAddr) -> String {
    let octets: Vec<u8> = match addr {
        SocketAddr::V4(a) => a.ip().octets().to_vec(),
        SocketAddr::V6(a) => a.ip().octets().to_vec(),
    };
    let words: String = octets.chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))).collect();
    format!("{words}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_spelled_like_the_kernel() {
        // Little-endian hosts, as in /proc/net/tcp on x86-64 and aarch64.
        if cfg!(target_endian = "little") {
            assert_eq!(local_hex("127.0.0.1:8080".parse().unwrap()), "0100007F:1F90");
            assert_eq!(local_hex("[::1]:443".parse().unwrap()), "00000000000000000000000001000000:01BB");
        }
        assert_eq!(parse_socket_link("socket:[4242]"), Some(4242));
        assert_eq!(parse_socket_link("pipe:[4242]"), None);
    }

    #[test]
    fn a_listener_is_found_by_its_inode_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let inode = parse_socket_link(&link.to_string_lossy()).unwrap();
        assert_eq!(on_port(addr).unwrap(), vec![inode]);
        drop(listener);
        assert!(on_port(addr).unwrap().is_empty());
    }
}
