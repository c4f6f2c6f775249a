//! The client a trusted proxy speaks for, from the forwarding headers of its request head.
//!
//! # Which header, and why in this order
//! `X-Forwarded-For`, else `Forwarded` (RFC 7239), else `X-Real-IP`; none of them: the
//! proxy's own address. `X-Forwarded-For` comes first because it is the one every common
//! proxy *appends* to (nginx's `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`,
//! Caddy, Traefik, Envoy, cloud load balancers), while most pass a `Forwarded` or
//! `X-Real-IP` header from the browser through untouched: reading those first would let any
//! browser name its own address. The two lists are walked from the right, skipping trusted
//! addresses: the first untrusted one is the client (a browser can prepend entries, never
//! append them). If every entry is trusted, the leftmost counts.
//!
//! Whatever a header holds, the answer is an address or an [`Unusable`] (never a panic):
//! an entry that is not an address (`unknown`, an obfuscated name, garbage, a `Forwarded`
//! value that breaks RFC 7239's grammar) where the walk needs one makes the caller count the
//! proxy's own address. The head is bounded by `--max-handshake-bytes`, so is the work.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::access::Cidr;

const X_FORWARDED_FOR: &str = "X-Forwarded-For";
const FORWARDED: &str = "Forwarded";
const X_REAL_IP: &str = "X-Real-IP";

/// Why the forwarding headers named no usable client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unusable {
    /// The header at fault.
    pub header: &'static str,
    /// What was wrong with it.
    pub why: &'static str,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.header, self.why)
    }
}

/// True if a peer at `ip` is one of the `trusted` proxies.
pub fn trusted(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(ip))
}

/// The client address of a request head (request line, headers, blank line) that the
/// trusted proxy at `peer` sent: see the module docs for the header order. `peer` itself
/// when no forwarding header is present.
pub fn client(head: &[u8], peer: IpAddr, trusted: &[Cidr]) -> Result<IpAddr, Unusable> {
    let xff = list(head, X_FORWARDED_FOR)?;
    if !xff.is_empty() {
        return walk(xff.into_iter().map(Some), X_FORWARDED_FOR, trusted);
    }
    let fwd = forwarded_for(head)?;
    if !fwd.is_empty() {
        return walk(fwd.into_iter(), FORWARDED, trusted);
    }
    let real: Vec<&[u8]> = values(head, X_REAL_IP).filter(|v| !v.is_empty()).collect();
    let bad = |why| Unusable {
        header: X_REAL_IP,
        why,
    };
    match real.as_slice() {
        [] => Ok(peer),
        [one] => text(one, X_REAL_IP).and_then(|t| node_addr(t).ok_or(bad("not an address"))),
        _ => Err(bad("given more than once")),
    }
}

/// From the right, the first node that is not trusted; the leftmost if all are. A node
/// the walk reaches that is no address (`None`: a `Forwarded` element without `for=`)
/// makes the whole answer unusable. `Ok` always has a node, since the list is not empty.
fn walk<'a>(
    nodes: impl DoubleEndedIterator<Item = Option<&'a str>>,
    header: &'static str,
    nets: &[Cidr],
) -> Result<IpAddr, Unusable> {
    let mut last = None;
    for node in nodes.rev() {
        let ip = node.and_then(node_addr).ok_or(Unusable {
            header,
            why: "an entry is not an address",
        })?;
        if !trusted(nets, ip) {
            return Ok(ip);
        }
        last = Some(ip);
    }
    last.ok_or(Unusable {
        header,
        why: "empty",
    })
}

/// An address as proxies write a node: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, with
/// or without a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn node_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let v6 = s.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The values of every `name` header line of `head` (the request line skipped; names
/// compared without case), trimmed, in order. Several lines of a list header are one list.
fn values<'a>(head: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn text<'a>(value: &'a [u8], header: &'static str) -> Result<&'a str, Unusable> {
    std::str::from_utf8(value).map_err(|_| Unusable {
        header,
        why: "not text",
    })
}

/// The non-empty, trimmed elements of a comma-separated list header, every line of it.
fn list<'a>(head: &'a [u8], header: &'static str) -> Result<Vec<&'a str>, Unusable> {
    let mut out = Vec::new();
    for value in values(head, header) {
        let value = text(value, header)?;
        out.extend(value.split(',').map(str::trim).filter(|e| !e.is_empty()));
    }
    Ok(out)
}

/// The `for=` of each `Forwarded` element, every line of it, in order (`None`: an element
/// without one). RFC 7239 §4: `for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"`.
fn forwarded_for(head: &[u8]) -> Result<Vec<Option<&str>>, Unusable> {
    let mut out = Vec::new();
    for value in values(head, FORWARDED) {
        parse_forwarded(text(value, FORWARDED)?, &mut out).map_err(|why| Unusable {
            header: FORWARDED,
            why,
        })?;
    }
    Ok(out)
}

/// RFC 7230 `tchar`: what an unquoted token may hold.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One `Forwarded` value: `element *( "," element )`, an element being
/// `pair *( ";" pair )`, a pair `token "=" ( token / quoted-string )`. Empty elements are
/// skipped (the list rule). A quoted value is kept as written, so one with a
/// backslash escape is no address.
fn parse_forwarded<'a>(s: &'a str, out: &mut Vec<Option<&'a str>>) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let ows = |mut i: usize| {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        i
    };
    let token_end = |mut i: usize| {
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        i
    };
    let mut i = ows(0);
    let mut element: Option<Option<&str>> = None;
    while i < b.len() {
        if b[i] == b',' {
            out.extend(element.take());
            i = ows(i + 1);
            continue;
        }
        let name_end = token_end(i);
        if name_end == i || b.get(name_end) != Some(&b'=') {
            return Err("malformed (want name=value pairs)");
        }
        let name = &s[i..name_end];
        let (value, end) = if b.get(name_end + 1) == Some(&b'"') {
            let start = name_end + 2;
            let mut j = start;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            if j >= b.len() {
                return Err("unterminated quoted string");
            }
            (&s[start..j], j + 1)
        } else {
            let end = token_end(name_end + 1);
            if end == name_end + 1 {
                return Err("malformed (empty value)");
            }
            (&s[name_end + 1..end], end)
        };
        let node = element.get_or_insert(None);
        if name.eq_ignore_ascii_case("for") {
            if node.is_some() {
                return Err("for= twice in one element");
            }
            *node = Some(value);
        }
        i = ows(end);
        match b.get(i) {
            Some(b';') => i = ows(i + 1),
            Some(b',') | None => {}
            Some(_) => return Err("malformed (want ; or , between pairs)"),
        }
    }
    out.extend(element);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::parse_cidrs;
    use proptest::prelude::*;

    const PEER: &str = "127.0.0.1";

    fn loopback() -> Vec<Cidr> {
        parse_cidrs("127.0.0.0/8,::1/128").unwrap()
    }

    fn head(headers: &[&str]) -> Vec<u8> {
        let mut h = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for line in headers {
            h.extend_from_slice(line.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    fn client_of(headers: &[&str]) -> Result<String, Unusable> {
        client(&head(headers), PEER.parse().unwrap(), &loopback()).map(|ip| ip.to_string())
    }

    fn ok(headers: &[&str]) -> String {
        client_of(headers).unwrap_or_else(|e| panic!("{headers:?}: {e}"))
    }

    fn unusable(headers: &[&str]) -> Unusable {
        client_of(headers).expect_err(&format!("{headers:?} gave an address"))
    }

    #[test]
    fn no_forwarding_header_is_the_peer() {
        assert_eq!(ok(&[]), PEER);
        assert_eq!(
            ok(&["X-Forwarded-For:", "Forwarded:   ", "X-Real-IP:"]),
            PEER
        );
        // Header names only count in header lines, not in the request line.
        let h = b"GET /X-Forwarded-For:203.0.113.1 HTTP/1.1\r\n\r\n";
        assert_eq!(
            client(h, PEER.parse().unwrap(), &loopback())
                .unwrap()
                .to_string(),
            PEER
        );
    }

    #[test]
    fn x_forwarded_for_walks_from_the_right() {
        assert_eq!(ok(&["X-Forwarded-For: 203.0.113.7"]), "203.0.113.7");
        // A browser-supplied prefix does not count: the proxy appended the last entry.
        assert_eq!(
            ok(&["x-forwarded-for: 1.1.1.1, 203.0.113.7"]),
            "203.0.113.7"
        );
        // Trusted hops (a second local proxy) are skipped.
        assert_eq!(
            ok(&["X-FORWARDED-FOR: 1.1.1.1,203.0.113.7 , 127.0.0.5,::1"]),
            "203.0.113.7"
        );
        // Every entry trusted: the leftmost.
        assert_eq!(ok(&["X-Forwarded-For: 127.0.0.9, 127.0.0.1"]), "127.0.0.9");
        // Several lines are one list; empty elements are skipped.
        assert_eq!(
            ok(&[
                "X-Forwarded-For: 203.0.113.7",
                "X-Forwarded-For: ,, 198.51.100.2,"
            ]),
            "198.51.100.2"
        );
        // Garbage left of the client does not matter.
        assert_eq!(
            ok(&["X-Forwarded-For: <script>, unknown, 203.0.113.7"]),
            "203.0.113.7"
        );
    }

    #[test]
    fn addresses_with_ports_and_brackets() {
        for (value, want) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("::ffff:203.0.113.7", "::ffff:203.0.113.7"),
        ] {
            assert_eq!(ok(&[&format!("X-Forwarded-For: {value}")]), want, "{value}");
        }
        // An IPv4-mapped loopback is loopback: trusted, skipped.
        assert_eq!(
            ok(&["X-Forwarded-For: 203.0.113.7, ::ffff:127.0.0.1"]),
            "203.0.113.7"
        );
    }

    #[test]
    fn garbage_where_the_client_should_be_is_unusable() {
        for value in [
            "unknown",
            "203.0.113.7, garbage",
            "203.0.113.7, 127.0.0.1, 300.1.1.1",
            "[2001:db8::1",
            "2001:db8::1]:80",
            "203.0.113.7:99999",
            "fe80::1%eth0",
            "203.0.113.7 198.51.100.1",
        ] {
            let e = unusable(&[&format!("X-Forwarded-For: {value}")]);
            assert_eq!(e.header, "X-Forwarded-For", "{value}");
        }
        let h = b"GET / HTTP/1.1\r\nX-Forwarded-For: \xff\xfe\r\n\r\n";
        assert_eq!(
            client(h, PEER.parse().unwrap(), &loopback())
                .unwrap_err()
                .why,
            "not text"
        );
    }

    #[test]
    fn forwarded_rfc_7239() {
        assert_eq!(
            ok(&["Forwarded: for=192.0.2.60;proto=https;by=203.0.113.43"]),
            "192.0.2.60"
        );
        assert_eq!(
            ok(&[r#"Forwarded: For="[2001:db8:cafe::17]:4711""#]),
            "2001:db8:cafe::17"
        );
        assert_eq!(ok(&[r#"forwarded: for="192.0.2.43:47011""#]), "192.0.2.43");
        // Walked from the right like X-Forwarded-For, across lines.
        assert_eq!(
            ok(&[
                "Forwarded: for=198.51.100.1, for=192.0.2.43",
                r#"Forwarded: proto=http;for="[::1]", for=127.0.0.1"#
            ]),
            "192.0.2.43"
        );
        // Quoted commas and semicolons are part of the value, not separators.
        assert_eq!(
            ok(&[r#"Forwarded: by="a,b;c", for=192.0.2.9"#]),
            "192.0.2.9"
        );
        assert_eq!(
            ok(&["Forwarded: for=192.0.2.9 ;  proto=https ,"]),
            "192.0.2.9"
        );
        for (value, why) in [
            ("for=unknown", "an entry is not an address"),
            ("for=_hidden", "an entry is not an address"),
            ("proto=https", "an entry is not an address"),
            ("for=192.0.2.1;for=192.0.2.2", "for= twice in one element"),
            (r#"for="[::1]"#, "unterminated quoted string"),
            ("for=[2001:db8::1]", "malformed (empty value)"),
            ("for=192.0.2.1 x", "malformed (want ; or , between pairs)"),
            ("for=", "malformed (empty value)"),
            ("192.0.2.1", "malformed (want name=value pairs)"),
            (r#"for="\[2001:db8::1\]""#, "an entry is not an address"),
        ] {
            let e = unusable(&[&format!("Forwarded: {value}")]);
            assert_eq!((e.header, e.why), ("Forwarded", why), "{value}");
        }
    }

    #[test]
    fn x_real_ip() {
        assert_eq!(ok(&["X-Real-IP: 203.0.113.8"]), "203.0.113.8");
        assert_eq!(ok(&["x-real-ip: [2001:db8::8]:443"]), "2001:db8::8");
        // Taken as the proxy says, even when it is a trusted address.
        assert_eq!(ok(&["X-Real-IP: 127.0.0.3"]), "127.0.0.3");
        assert_eq!(unusable(&["X-Real-IP: nope"]).why, "not an address");
        assert_eq!(
            unusable(&["X-Real-IP: 203.0.113.8", "X-Real-IP: 203.0.113.9"]).why,
            "given more than once"
        );
    }

    #[test]
    fn precedence_is_xff_then_forwarded_then_x_real_ip() {
        let all = [
            "X-Real-IP: 203.0.113.3",
            "Forwarded: for=203.0.113.2",
            "X-Forwarded-For: 203.0.113.1",
        ];
        assert_eq!(ok(&all), "203.0.113.1");
        assert_eq!(ok(&all[..2]), "203.0.113.2");
        assert_eq!(ok(&all[..1]), "203.0.113.3");
        // The first header present decides, garbage included: no falling through to one
        // a browser may have set.
        assert_eq!(
            unusable(&["X-Forwarded-For: junk", "X-Real-IP: 203.0.113.3"]).header,
            "X-Forwarded-For"
        );
    }

    #[test]
    fn nobody_trusted_still_reads_the_rightmost() {
        // (The server never asks without a trusted peer; the walk itself stops at once.)
        let h = head(&["X-Forwarded-For: 127.0.0.1, 10.0.0.1"]);
        assert_eq!(
            client(&h, PEER.parse().unwrap(), &[]).unwrap().to_string(),
            "10.0.0.1"
        );
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            (0u8..4).prop_map(|n| IpAddr::from([127, 0, 0, n])),
        ]
    }

    fn written(ip: IpAddr, style: u8) -> String {
        match (ip, style % 3) {
            (IpAddr::V4(v4), 1) => format!("{v4}:{}", 1000 + u16::from(style)),
            (IpAddr::V6(v6), 1) => format!("[{v6}]:{}", 1000 + u16::from(style)),
            (IpAddr::V6(v6), 2) => format!("[{v6}]"),
            _ => ip.to_string(),
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_head(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = client(&bytes, PEER.parse().unwrap(), &loopback());
        }

        #[test]
        fn never_panics_on_any_header_value(
            name in prop_oneof![Just("X-Forwarded-For"), Just("Forwarded"), Just("X-Real-IP")],
            value in "[ -~\t]{0,80}",
        ) {
            let _ = client_of(&[&format!("{name}: {value}")]);
        }

        /// The model: from the right, the first untrusted address, else the leftmost.
        #[test]
        fn xff_matches_the_model(nodes in proptest::collection::vec((any_ip(), any::<u8>()), 1..8)) {
            let value = nodes.iter().map(|&(ip, s)| written(ip, s)).collect::<Vec<_>>().join(", ");
            let nets = loopback();
            let want = nodes.iter().rev().map(|n| n.0).find(|ip| !trusted(&nets, *ip))
                .unwrap_or(nodes[0].0);
            let h = head(&[&format!("X-Forwarded-For: {value}")]);
            prop_assert_eq!(client(&h, PEER.parse().unwrap(), &nets), Ok(want));
        }

        /// Whatever a browser puts in front, the address its proxy appended is the answer
        /// (X-Forwarded-For), or the answer is unusable (Forwarded): never another address.
        #[test]
        fn a_browser_cannot_name_itself(prefix in "[ -~\t]{0,60}", ip in any_ip()) {
            prop_assume!(!trusted(&loopback(), ip));
            let xff = head(&[&format!("X-Forwarded-For: {prefix}, {ip}")]);
            prop_assert_eq!(client(&xff, PEER.parse().unwrap(), &loopback()), Ok(ip));
            let fwd = head(&[&format!(r#"Forwarded: {prefix}, for="{}""#, written(ip, 2))]);
            let got = client(&fwd, PEER.parse().unwrap(), &loopback());
            prop_assert!(got.is_err() || got == Ok(ip), "{got:?}");
        }
    }
}
