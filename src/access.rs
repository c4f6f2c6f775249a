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

/// Parses a comma-separated list of networks (for clap).
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Counts open connections per source address and refuses past a cap.
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
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
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
