//! Who may connect: source-address allow-lists, per-address connection caps, shared secrets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// One `addr/len` network (`10.0.0.0/8`, `::1/128`; a bare address means one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.trim().parse::<u8>().map_err(|e| format!("{s:?}: {e}"))?,
            None => max,
        };
        if len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Cidr { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// True if `ip` is inside this network. IPv4-mapped IPv6 peers match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }

    /// True if every address of `other` is inside this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        let other_len = match other.addr {
            // An IPv4 network named as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`).
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && self.addr.is_ipv4() => {
                other.len.saturating_sub(96)
            }
            _ => other.len,
        };
        self.len <= other_len && self.contains(other.addr)
    }
}

/// `127.0.0.0/8` and `::1/128`: this host.
pub fn loopback() -> Vec<Cidr> {
    vec![
        Cidr {
            addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
            len: 8,
        },
        Cidr {
            addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            len: 128,
        },
    ]
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (full, rest) = (usize::from(len / 8), len % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// True if a peer at `ip` may use a door restricted to `allow` (no list: anyone; a Unix
/// socket peer, `None`: always, its file permissions decided).
pub fn allowed(allow: Option<&[Cidr]>, ip: Option<IpAddr>) -> bool {
    match (allow, ip) {
        (Some(nets), Some(ip)) => nets.iter().any(|net| net.contains(ip)),
        _ => true,
    }
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP peer.
    Tcp(std::net::SocketAddr),
    /// A Unix-socket peer.
    Unix,
}

impl Peer {
    /// Its IP address (none for a Unix socket).
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(addr) => Some(addr.ip()),
            Peer::Unix => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// Parses a comma-separated list of networks (for clap).
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// The address a per-address cap counts: the IPv4 address itself (IPv4-mapped IPv6
/// included), or the /64 of an IPv6 address, since one IPv6 subscriber is handed a whole
/// /64 and could otherwise open a cap's worth of connections from each of 2^64 addresses.
pub fn subscriber(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Counts open connections per source address ([`subscriber`]) and refuses past a cap.
#[derive(Debug, Clone)]
pub struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Holds one connection's place in [`PerIp`]; dropping it frees the place.
#[must_use]
#[derive(Debug)]
pub struct IpSlot {
    owner: PerIp,
    ip: IpAddr,
}

impl PerIp {
    /// At most `max` connections per source address.
    pub fn new(max: usize) -> Self {
        PerIp {
            max,
            open: Arc::default(),
        }
    }

    /// Takes a place for `ip`, or `None` if it already has `max` connections.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = subscriber(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Who may hold a browser-port connection: the per-address cap on connections, and a
/// separate, smaller budget for connections that are not bound yet (handshake and uid),
/// in total and per address. Without the second, strangers that connect and send nothing
/// hold the connection slots real browsers need until their bind timeout.
#[derive(Debug, Clone)]
pub struct Admission {
    connections: PerIp,
    pending_per_ip: PerIp,
    pending: Arc<tokio::sync::Semaphore>,
}

/// A connection's places in [`Admission`]: held until it closes and until it is bound.
#[derive(Debug)]
pub struct Admitted {
    /// Held for the connection's life (`None` for a peer without an address).
    pub connection: Option<IpSlot>,
    /// Held until the connection is bound; drop it then.
    pub pending: Pending,
}

/// A place in the pending (not yet bound) budget.
#[must_use]
#[derive(Debug)]
pub struct Pending {
    per_ip: Option<IpSlot>,
    _total: tokio::sync::OwnedSemaphorePermit,
}

/// Why [`Admission::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address holds `--max-connections-per-ip` connections.
    Connections,
    /// The address has `--max-pending-per-ip` connections not bound yet.
    PendingPerAddress,
    /// `--max-pending-handshakes` connections are not bound yet.
    Pending,
}

impl Admission {
    /// Caps: connections per address, unbound connections per address and in total.
    pub fn new(per_ip: usize, pending_per_ip: usize, pending: usize) -> Self {
        Admission {
            connections: PerIp::new(per_ip),
            pending_per_ip: PerIp::new(pending_per_ip),
            pending: Arc::new(tokio::sync::Semaphore::new(pending)),
        }
    }

    /// Takes the places a new connection from `ip` needs, or says which cap refuses it.
    /// Without an address (a Unix peer, or a trusted proxy whose client is not known yet)
    /// only the server-wide pending place is taken.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Admitted, Refused> {
        let (connection, per_ip) = ip.map(|ip| self.per_address(ip)).transpose()?.unzip();
        let total = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Pending)?;
        Ok(Admitted {
            connection,
            pending: Pending {
                per_ip,
                _total: total,
            },
        })
    }

    /// Takes the per-address places of the client a trusted proxy named (once its request
    /// head is read) for a connection [`admit`](Admission::admit)ted without an address.
    pub fn admit_forwarded(&self, ip: IpAddr, places: &mut Admitted) -> Result<(), Refused> {
        let (connection, per_ip) = self.per_address(ip)?;
        places.connection = Some(connection);
        places.pending.per_ip = Some(per_ip);
        Ok(())
    }

    /// An address's place among its connections and among its connections not bound yet.
    fn per_address(&self, ip: IpAddr) -> Result<(IpSlot, IpSlot), Refused> {
        let connection = self
            .connections
            .try_acquire(ip)
            .ok_or(Refused::Connections)?;
        let pending = self
            .pending_per_ip
            .try_acquire(ip)
            .ok_or(Refused::PendingPerAddress)?;
        Ok((connection, pending))
    }
}

/// Compares secrets without leaking, through timing, how long a prefix matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let nets = parse_cidrs("127.0.0.0/8, 10.1.2.3,::1,fd00::/8").unwrap();
        let ok = |s: &str| nets.iter().any(|n| n.contains(s.parse().unwrap()));
        assert!(ok("127.9.9.9") && ok("10.1.2.3") && ok("::1") && ok("fd12::1"));
        assert!(ok("::ffff:127.0.0.1"));
        assert!(!ok("10.1.2.4") && !ok("128.0.0.1") && !ok("::2"));
        assert!(parse_cidrs("10.0.0.0/33").is_err() && parse_cidrs("nope").is_err());
        assert_eq!(loopback(), parse_cidrs("127.0.0.0/8,::1/128").unwrap());
        assert_eq!(loopback()[1].to_string(), "::1/128");
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(subscriber(a), subscriber(b));
        assert_ne!(subscriber(a), subscriber(other));
        assert_eq!(subscriber(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(subscriber(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let limit = PerIp::new(1);
        let _slot = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(b).is_none(), "same /64");
        assert!(limit.try_acquire(other).is_some());
    }

    #[test]
    fn admission_budgets() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let adm = Admission::new(3, 2, 3);
        let a = adm.admit(Some(ip)).unwrap();
        let b = adm.admit(Some(ip)).unwrap();
        assert_eq!(adm.admit(Some(ip)).unwrap_err(), Refused::PendingPerAddress);
        let c = adm.admit(Some(other)).unwrap();
        assert_eq!(adm.admit(None).unwrap_err(), Refused::Pending);
        // Bound: the pending places free up, the connection places stay.
        let Admitted {
            connection: a,
            pending,
        } = a;
        drop(pending);
        let Admitted {
            connection: b,
            pending,
        } = b;
        drop(pending);
        drop(c.pending);
        let d = adm.admit(Some(ip)).unwrap();
        assert_eq!(adm.admit(Some(ip)).unwrap_err(), Refused::Connections);
        drop((a, b, d));
    }

    #[test]
    fn forwarded_places_join_an_addressless_admission() {
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let adm = Admission::new(2, 1, 10);
        let mut a = adm.admit(None).unwrap();
        adm.admit_forwarded(client, &mut a).unwrap();
        let mut b = adm.admit(None).unwrap();
        // One pending place per address, and the first is not bound yet.
        assert_eq!(
            adm.admit_forwarded(client, &mut b).unwrap_err(),
            Refused::PendingPerAddress
        );
        drop(a.pending); // bound
        adm.admit_forwarded(client, &mut b).unwrap();
        drop(b.pending);
        let mut c = adm.admit(None).unwrap();
        assert_eq!(
            adm.admit_forwarded(client, &mut c).unwrap_err(),
            Refused::Connections
        );
        drop(a.connection); // closed
        adm.admit_forwarded(client, &mut c).unwrap();
        drop((b.connection, c));
    }

    #[test]
    fn per_ip_caps_and_frees() {
        let limit = PerIp::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = limit.try_acquire(ip).unwrap();
        let _b = limit.try_acquire(ip).unwrap();
        assert!(limit.try_acquire(ip).is_none());
        assert!(limit.try_acquire("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(limit.try_acquire(ip).is_some());
    }
}
