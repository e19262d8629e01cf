//! Which user owns the other end of a loopback TCP connection.
//!
//! Linux lists every TCP socket of the network namespace, with its owner's
//! UID, in `/proc/net/tcp` and `/proc/net/tcp6`. The client's socket of a
//! connection accepted on `local` from `peer` is the one whose local
//! address is `peer` and whose remote address is `local`. Both ends are in
//! credgate's namespace, since the connection came over loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The UID owning the client socket of the loopback connection `peer` →
/// `local`; `None` when it cannot be found (or off Linux), which callers
/// take as "not the expected user".
pub(crate) fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        find_owner(&table, peer, local)
    })
}

/// The `uid` column of the row of `table` (a `/proc/net/tcp*` listing)
/// whose local address is `peer` and remote address `local`.
fn find_owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (peer, local) = (canonical(peer), canonical(local));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid …
        let (own, other, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        if parse_endpoint(own)? == peer && parse_endpoint(other)? == local {
            uid.parse().ok()
        } else {
            None
        }
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The address is
/// printed as the 32-bit words it is stored in, each in the host's byte
/// order; the port as a number.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `addr` as the kernel prints it in `/proc/net/tcp*`.
    fn printed(addr: SocketAddr) -> String {
        let words = |bytes: &[u8]| -> String {
            bytes
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
                .collect()
        };
        let address = match addr.ip() {
            IpAddr::V4(ip) => words(&ip.octets()),
            IpAddr::V6(ip) => words(&ip.octets()),
        };
        format!("{address}:{:04X}", addr.port())
    }

    fn row(own: SocketAddr, other: SocketAddr, uid: u32) -> String {
        format!(
            "   0: {} {} 01 00000000:00000000 00:00000000 00000000 {uid:>5}        0 4242 1 0000000000000000 20 4 30 10 -1",
            printed(own),
            printed(other)
        )
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    #[test]
    fn the_client_row_gives_the_owner() {
        let server: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:51235".parse().unwrap();
        let table = [
            HEADER.to_owned(),
            // The server's own end of the same connection, owned by credgate.
            row(server, client, 0),
            row(other, server, 2000),
            row(client, server, 1000),
        ]
        .join("\n");
        assert_eq!(find_owner(&table, client, server), Some(1000));
        assert_eq!(find_owner(&table, other, server), Some(2000));
        let stranger: SocketAddr = "127.0.0.1:5".parse().unwrap();
        assert_eq!(find_owner(&table, stranger, server), None);
        assert_eq!(find_owner("", client, server), None);
        assert_eq!(find_owner("header\ngarbage line", client, server), None);
    }

    #[test]
    fn ipv6_and_mapped_ipv4_rows_are_read() {
        let server: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:51234".parse().unwrap();
        let table = [
            HEADER.to_owned(),
            row(mapped, "[::ffff:127.0.0.1]:40001".parse().unwrap(), 7),
        ]
        .join("\n");
        let client: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        assert_eq!(find_owner(&table, client, server), Some(7));
        let v6: SocketAddr = "[::1]:51234".parse().unwrap();
        let v6_server: SocketAddr = "[::1]:40001".parse().unwrap();
        let table = [HEADER.to_owned(), row(v6, v6_server, 9)].join("\n");
        assert_eq!(find_owner(&table, v6, v6_server), Some(9));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_real_connection_is_owned_by_this_process_user() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer_uid(peer, local), Some(nix::unistd::getuid().as_raw()));
    }
}
