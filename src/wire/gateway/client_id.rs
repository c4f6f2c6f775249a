//! [`ClientId`]: GatewayWorker's name for one browser connection, which is also where
//! GatewayClient sends the commands about it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

/// `bin2hex(pack('NnN', local_ip, local_port, connection_id))`: 20 lowercase hex digits.
///
/// GatewayClient never asks anyone where a client id lives: `sendToClient`, `bindUid`,
/// `joinGroup`, `isOnline`, `closeClient`, `getSession`, … connect straight to
/// [`ClientId::gateway`], and the exclusions of `sendToAll`/`sendToGroup` are only sent to
/// the Register-listed gateway whose address equals it. So the address part must be one
/// the application can reach, written as that Register lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    /// The gateway that GatewayClient will send this connection's commands to.
    pub gateway: SocketAddrV4,
    /// The connection's number at that gateway (the frame header's `connection_id`).
    pub connection: u32,
}

/// Text that is not 20 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadClientId;

impl fmt::Display for BadClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a client_id is 20 hex digits")
    }
}

impl std::error::Error for BadClientId {}

impl FromStr for ClientId {
    type Err = BadClientId;

    /// Upper or lower case, as PHP's `pack('H*', …)` takes both.
    fn from_str(s: &str) -> Result<ClientId, BadClientId> {
        let hex = s.as_bytes();
        if hex.len() != 20 {
            return Err(BadClientId);
        }
        let mut bytes = [0u8; 10];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or(BadClientId);
            bytes[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        let [a, b, c, d, p0, p1, n0, n1, n2, n3] = bytes;
        Ok(ClientId {
            gateway: SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), u16::from_be_bytes([p0, p1])),
            connection: u32::from_be_bytes([n0, n1, n2, n3]),
        })
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}{:04x}{:08x}",
            u32::from(*self.gateway.ip()),
            self.gateway.port(),
            self.connection
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_gatewayworkers_ids() {
        // A client id GatewayWorker 4 gave a page: 127.0.0.1:22900, connection 1.
        let id: ClientId = "7f000001597400000001".parse().unwrap();
        assert_eq!(id.gateway, "127.0.0.1:22900".parse().unwrap());
        assert_eq!(id.connection, 1);
        assert_eq!(id.to_string(), "7f000001597400000001");
        let upper: ClientId = "7F000001597400000001".parse().unwrap();
        assert_eq!(upper, id);
        let max = ClientId {
            gateway: "255.255.255.255:65535".parse().unwrap(),
            connection: u32::MAX,
        };
        assert_eq!(max.to_string(), "ffffffffffffffffffff");
        assert_eq!(max.to_string().parse(), Ok(max));
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "7f00000159740000000",
            "7f0000015974000000011",
            "7f00000159740000000g",
            "+f000001597400000001",
            "7f000001597400000é1",
        ] {
            assert_eq!(bad.parse::<ClientId>(), Err(BadClientId), "{bad:?}");
        }
    }
}
