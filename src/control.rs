//! The client side of `pushwire status` (and `push`, `online`, `kick`): talks to a running
//! daemon over its own push port, as any backend would, so it needs no extra listener and
//! obeys the same access rules (a Unix socket if configured, else TCP with `/auth`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// Where the daemon is, from the daemon's own flags.
#[derive(Debug, Clone)]
pub struct Target {
    /// `--push-listen`: an unspecified address (`0.0.0.0`) means this machine.
    pub push: SocketAddr,
    /// `--push-unix`: preferred when set (no secret needed; file permissions decide).
    pub unix: Option<PathBuf>,
    /// The push secret, sent as `/auth` over TCP.
    pub secret: Option<Vec<u8>>,
    /// Connect and reply deadline.
    pub timeout: Duration,
}

/// Why talking to the daemon failed.
#[derive(Debug)]
pub enum ControlError {
    /// Nothing answered at the address.
    Unreachable(String),
    /// It answered, but not as pushwire does, or refused us.
    Refused(String),
    /// Not sent: the request is not one line (a line break would make the rest a
    /// second line, run as a push or command of its own).
    NotOneLine,
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::Unreachable(why) => write!(f, "daemon not reachable: {why}"),
            ControlError::Refused(why) => write!(f, "daemon refused: {why}"),
            ControlError::NotOneLine => f.write_str(
                "not sent: the request must be one line (no line break in the uid, message or reason)",
            ),
        }
    }
}

impl std::error::Error for ControlError {}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection to the daemon's push port.
pub struct Session {
    io: BufReader<Box<dyn Stream>>,
    timeout: Duration,
    /// Where it is connected, for messages.
    pub peer: String,
}

impl Session {
    /// Connects (Unix socket if configured, else TCP) and authenticates if needed.
    pub async fn open(target: &Target) -> Result<Session, ControlError> {
        let (io, peer): (Box<dyn Stream>, String) = match &target.unix {
            Some(path) => {
                let s = tokio::time::timeout(target.timeout, UnixStream::connect(path))
                    .await
                    .map_err(|_| {
                        ControlError::Unreachable(format!("{}: timed out", path.display()))
                    })?
                    .map_err(|e| ControlError::Unreachable(format!("{}: {e}", path.display())))?;
                (Box::new(s), path.display().to_string())
            }
            None => {
                let addr = local(target.push);
                let s = tokio::time::timeout(target.timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| ControlError::Unreachable(format!("{addr}: timed out")))?
                    .map_err(|e| ControlError::Unreachable(format!("{addr}: {e}")))?;
                (Box::new(s), addr.to_string())
            }
        };
        let mut session = Session {
            io: BufReader::new(io),
            timeout: target.timeout,
            peer,
        };
        if target.unix.is_none()
            && let Some(secret) = &target.secret
        {
            let mut line = b"/auth ".to_vec();
            line.extend_from_slice(secret);
            let reply = session.request_bytes(&line).await?;
            json_ok(&reply)?;
        }
        Ok(session)
    }

    /// Sends one line, returns its reply line (without the newline).
    pub async fn request(&mut self, line: &str) -> Result<String, ControlError> {
        self.request_bytes(line.as_bytes()).await
    }

    async fn request_bytes(&mut self, line: &[u8]) -> Result<String, ControlError> {
        if line.iter().any(|&b| b == b'\n' || b == b'\r') {
            return Err(ControlError::NotOneLine);
        }
        let io = async {
            let w = self.io.get_mut();
            w.write_all(line).await?;
            w.write_all(b"\n").await?;
            let mut reply = String::new();
            let n = self.io.read_line(&mut reply).await?;
            Ok::<_, std::io::Error>((n, reply))
        };
        match tokio::time::timeout(self.timeout, io).await {
            Err(_) => Err(ControlError::Unreachable(format!(
                "{}: no reply in time",
                self.peer
            ))),
            Ok(Err(e)) => Err(ControlError::Unreachable(format!("{}: {e}", self.peer))),
            Ok(Ok((0, _))) => Err(ControlError::Refused(format!(
                "{} closed the connection",
                self.peer
            ))),
            Ok(Ok((_, reply))) => Ok(reply.trim_end_matches(['\n', '\r']).to_owned()),
        }
    }

    /// Sends a command and returns its JSON reply, which must say `"ok":true`.
    pub async fn command(&mut self, line: &str) -> Result<Value, ControlError> {
        let reply = self.request(line).await?;
        json_ok(&reply)
    }
}

fn json_ok(reply: &str) -> Result<Value, ControlError> {
    let v: Value = serde_json::from_str(reply)
        .map_err(|_| ControlError::Refused(format!("unexpected reply {reply:?}")))?;
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v)
    } else {
        let why = v.get("error").and_then(Value::as_str).unwrap_or(reply);
        Err(ControlError::Refused(why.to_owned()))
    }
}

/// A listening address turned into one to connect to: `0.0.0.0` / `::` mean this host.
fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Two `/stats` a sample apart: the counters now, and per-second rates over the sample.
#[derive(Debug)]
pub struct Status {
    /// The second `/stats` reply.
    pub stats: Value,
    /// How long the sample was.
    pub sample: Duration,
    /// Per-second rates of `pushes_ok` and `pushes_fail` over the sample.
    pub rates: Vec<(&'static str, f64)>,
}

/// Counters whose rate `status` shows.
const RATES: [&str; 4] = ["pushes_ok", "pushes_fail", "frames_out", "binds"];

/// Reads `/stats`, waits `sample`, reads it again.
pub async fn status(target: &Target, sample: Duration) -> Result<Status, ControlError> {
    let mut s = Session::open(target).await?;
    let first = s.command("/stats").await?;
    let started = Instant::now();
    tokio::time::sleep(sample).await;
    let stats = s.command("/stats").await?;
    let took = started.elapsed().as_secs_f64().max(1e-3);
    let rates = RATES
        .iter()
        .map(|&k| {
            let delta = field(&stats, k).saturating_sub(field(&first, k));
            (k, delta as f64 / took)
        })
        .collect();
    Ok(Status {
        stats,
        sample: started.elapsed(),
        rates,
    })
}

fn field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

impl Status {
    /// The machine-readable form: `/stats` plus `"per_sec"` rates and `"sample_ms"`.
    pub fn json(&self) -> Value {
        let mut v = self.stats.clone();
        if let Some(map) = v.as_object_mut() {
            let rates: serde_json::Map<String, Value> = self
                .rates
                .iter()
                .map(|(k, r)| ((*k).to_owned(), Value::from((r * 100.0).round() / 100.0)))
                .collect();
            map.insert("per_sec".into(), Value::Object(rates));
            map.insert(
                "sample_ms".into(),
                Value::from(self.sample.as_millis() as u64),
            );
        }
        v
    }

    /// The human table, Workerman's `status` in spirit: one figure a line.
    pub fn table(&self) -> String {
        let s = &self.stats;
        let rate = |k: &str| {
            self.rates
                .iter()
                .find(|(n, _)| *n == k)
                .map_or(0.0, |(_, r)| *r)
        };
        let up = field(s, "uptime_secs");
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            out.push_str(&format!("{label:<22} {value}\n"));
        };
        row(
            "uptime",
            format!(
                "{}d {:02}:{:02}:{:02}",
                up / 86400,
                up / 3600 % 24,
                up / 60 % 60,
                up % 60
            ),
        );
        row("browser connections", field(s, "connections").to_string());
        row("online uids", field(s, "uids").to_string());
        row("groups", field(s, "groups").to_string());
        row(
            "backend connections",
            field(s, "push_connections").to_string(),
        );
        row(
            "pushes ok",
            format!("{} ({:.1}/s)", field(s, "pushes_ok"), rate("pushes_ok")),
        );
        row(
            "pushes fail",
            format!("{} ({:.1}/s)", field(s, "pushes_fail"), rate("pushes_fail")),
        );
        row(
            "frames out",
            format!("{} ({:.1}/s)", field(s, "frames_out"), rate("frames_out")),
        );
        row("evicted (slow)", field(s, "evicted").to_string());
        row("kicked", field(s, "kicked").to_string());
        let refused: u64 = s
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("refused_"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        row("refused connections", refused.to_string());
        row(
            "open files",
            format!("{} of {}", field(s, "open_fds"), field(s, "fd_limit")),
        );
        out
    }
}
