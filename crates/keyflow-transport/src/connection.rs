//! What the server knows about the connection, and what the layers conclude from it.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// Facts about the connection a request arrived on, inserted by the server into each
/// request's extensions (`req.extensions_mut().insert(ConnectionInfo { .. })`).
///
/// A request without it is treated as plain HTTP from an unknown, untrusted peer with
/// no client certificate.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The TCP peer (a proxy's address when behind one).
    pub peer: SocketAddr,
    /// Whether this process terminated TLS for the connection.
    pub tls: bool,
    /// SHA-256 of the DER client certificate presented in the TLS handshake, if any.
    pub client_cert_sha256: Option<[u8; 32]>,
}

/// The effective client address, inserted into request extensions by
/// [`HttpsEnforcementLayer`](crate::HttpsEnforcementLayer): the peer, or, when the
/// peer is a trusted proxy, the address `X-Forwarded-For` names. Absent when the
/// request had no [`ConnectionInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// The effective client address and scheme of one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) client: Option<IpAddr>,
    pub(crate) https: bool,
}

/// Believes `X-Forwarded-For` / `X-Forwarded-Proto` only when the direct peer is in
/// `trusted`.
///
/// `X-Forwarded-For` is read right to left, skipping trusted proxies; the first other
/// address is the client (an unparsable entry stops the walk at the last good one).
/// `X-Forwarded-Proto` is the rightmost value, the one the trusted proxy itself added.
pub(crate) fn resolve(
    conn: Option<&ConnectionInfo>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Resolved {
    let Some(conn) = conn else {
        return Resolved {
            client: None,
            https: false,
        };
    };
    let peer = conn.peer.ip().to_canonical();
    if !is_trusted(peer, trusted) {
        return Resolved {
            client: Some(peer),
            https: conn.tls,
        };
    }

    let mut client = peer;
    let forwarded_for = header_list(headers, "x-forwarded-for");
    for entry in forwarded_for.iter().rev() {
        let Some(ip) = parse_forwarded_ip(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }

    let https = match header_list(headers, "x-forwarded-proto").last() {
        Some(proto) => proto.eq_ignore_ascii_case("https"),
        None => conn.tls,
    };
    Resolved {
        client: Some(client),
        https,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpAddr]) -> bool {
    trusted.iter().any(|t| t.to_canonical() == ip)
}

/// All values of a comma-list header, across repeated header lines, in order. A value
/// that is not visible ASCII yields an empty entry, which stops a `X-Forwarded-For` walk.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: &str, tls: bool) -> ConnectionInfo {
        ConnectionInfo {
            peer: peer.parse().unwrap(),
            tls,
            client_cert_sha256: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_connection_info_is_plain_and_unknown() {
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert_eq!(
            resolve(None, &h, &[ip("10.0.0.1")]),
            Resolved {
                client: None,
                https: false
            }
        );
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let r = resolve(
            Some(&conn("203.0.113.9:5000", false)),
            &h,
            &[ip("10.0.0.1")],
        );
        assert_eq!(
            r,
            Resolved {
                client: Some(ip("203.0.113.9")),
                https: false
            }
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        // The client forged the leftmost entry; the first untrusted address from the
        // right is the real client.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "http, https"),
        ]);
        let r = resolve(Some(&conn("10.0.0.1:40000", false)), &h, &trusted);
        assert_eq!(
            r,
            Resolved {
                client: Some(ip("198.51.100.7")),
                https: true
            }
        );
    }

    #[test]
    fn ipv4_mapped_peer_matches_ipv4_proxy_and_ports_are_stripped() {
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        let r = resolve(
            Some(&conn("[::ffff:10.0.0.1]:1", true)),
            &h,
            &[ip("10.0.0.1")],
        );
        assert_eq!(
            r,
            Resolved {
                client: Some(ip("2001:db8::1")),
                https: true
            }
        );
    }

    #[test]
    fn garbage_entry_stops_at_last_good_address() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, garbage")]);
        let r = resolve(Some(&conn("10.0.0.1:1", false)), &h, &[ip("10.0.0.1")]);
        assert_eq!(r.client, Some(ip("10.0.0.1")));
        assert!(!r.https);
    }
}
