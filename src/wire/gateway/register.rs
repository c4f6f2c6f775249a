//! The Register's text protocol: one JSON line in, one JSON line out. GatewayClient
//! connects, writes `{"event":"worker_connect","secret_key":"…"}` and a newline, reads one
//! line `{"event":"broadcast_addresses","addresses":["ip:port",…]}`, and sends its
//! commands to those gateway addresses (caching the list for a second or two).
//!
//! GatewayClient builds its line by string concatenation, so a secret holding `"` or `\`
//! makes a line that is not the JSON it meant: such secrets cannot work with it.

use std::fmt;
use std::net::SocketAddrV4;

use serde::Deserialize;

/// What a line sent to the Register asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `worker_connect`: a BusinessWorker or GatewayClient wants the gateways' addresses.
    /// `secret_key` is what it sent: missing reads as `""` (as GatewayWorker reads it),
    /// and `None` is a value that is not a string, which matches no secret.
    WorkerConnect {
        /// The secret it gave.
        secret_key: Option<String>,
    },
    /// `gateway_connect`: a GatewayWorker gateway announcing its address.
    GatewayConnect,
    /// `ping`: a keep-alive, answered with nothing.
    Ping,
    /// Any other event name.
    Other(String),
}

/// A line that is not a JSON object with a non-empty `event` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLine;

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a Register request (a JSON object with an \"event\")"
        )
    }
}

impl std::error::Error for BadLine {}

#[derive(Deserialize)]
struct Line {
    event: Option<serde_json::Value>,
    secret_key: Option<serde_json::Value>,
}

/// Reads one line (without its newline). An `event` PHP's `empty()` calls empty (`""`,
/// `"0"`, `0`, `false`, missing) is refused, as GatewayWorker refuses it.
pub fn parse_line(line: &[u8]) -> Result<Event, BadLine> {
    let line: Line = serde_json::from_slice(line).map_err(|_| BadLine)?;
    let event = match line.event {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s != "0" => s,
        _ => return Err(BadLine),
    };
    Ok(match event.as_str() {
        "worker_connect" => Event::WorkerConnect {
            secret_key: match line.secret_key {
                None | Some(serde_json::Value::Null) => Some(String::new()),
                Some(serde_json::Value::String(s)) => Some(s),
                Some(_) => None,
            },
        },
        "gateway_connect" => Event::GatewayConnect,
        "ping" => Event::Ping,
        _ => Event::Other(event),
    })
}

/// The answer to `worker_connect`, newline included: GatewayWorker's bytes (key order too,
/// which a `serde_json::Map` would sort).
pub fn addresses_line(gateways: &[SocketAddrV4]) -> Vec<u8> {
    let addresses: Vec<String> = gateways.iter().map(ToString::to_string).collect();
    // A list of strings always serializes.
    let list = serde_json::to_string(&addresses).unwrap_or_else(|_| "[]".into());
    format!("{{\"event\":\"broadcast_addresses\",\"addresses\":{list}}}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_gatewayclient_writes() {
        assert_eq!(
            parse_line(br#"{"event":"worker_connect","secret_key":"s3"}"#),
            Ok(Event::WorkerConnect {
                secret_key: Some("s3".into())
            })
        );
        assert_eq!(
            parse_line(br#"{"event":"worker_connect"}"#),
            Ok(Event::WorkerConnect {
                secret_key: Some(String::new())
            })
        );
        assert_eq!(
            parse_line(br#"{"event":"worker_connect","secret_key":12}"#),
            Ok(Event::WorkerConnect { secret_key: None })
        );
        assert_eq!(parse_line(br#"{"event":"ping"}"#), Ok(Event::Ping));
        assert_eq!(
            parse_line(br#"{"event":"gateway_connect","address":"1.2.3.4:2900"}"#),
            Ok(Event::GatewayConnect)
        );
        assert_eq!(
            parse_line(br#"{"event":"hello"}"#),
            Ok(Event::Other("hello".into()))
        );
    }

    #[test]
    fn refuses_what_gatewayworker_refuses() {
        for bad in [
            &b"garbage"[..],
            b"",
            b"[]",
            b"{}",
            br#"{"event":""}"#,
            br#"{"event":"0"}"#,
            br#"{"event":1}"#,
            // A secret with a quote, concatenated into the line unescaped.
            br#"{"event":"worker_connect","secret_key":"a"b"}"#,
        ] {
            assert_eq!(
                parse_line(bad),
                Err(BadLine),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn answers_as_the_register_does() {
        // GatewayWorker 4's Register, byte for byte.
        let gateways = [
            "127.0.0.1:22900".parse().unwrap(),
            "127.0.0.1:22901".parse().unwrap(),
        ];
        assert_eq!(
            addresses_line(&gateways),
            b"{\"event\":\"broadcast_addresses\",\"addresses\":[\"127.0.0.1:22900\",\"127.0.0.1:22901\"]}\n"
        );
    }
}
