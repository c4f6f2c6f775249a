//! Server-Sent Events on the browser port, for networks that block WebSockets: a `GET`
//! with `Accept: text/event-stream` binds a uid (`?uid=`, or `?token=` with a JWT secret)
//! as a protocol v1 connection and streams its messages as events (`docs/protocol.md`,
//! "SSE"). `EventSource` reconnects by itself and sends `Last-Event-ID`, which resumes
//! from history exactly like `?pushwire=1&since=`.
//!
//! The connection is a registry binding like any tab: it counts in presence, gets the
//! same queue limits and the same slow-consumer policy, and a kick or an eviction ends the
//! response. Events are written as a WebSocket tab's frames are: the payload every
//! recipient shares goes out as it is, in vectored writes with the few bytes each event
//! adds around it (`id:`, `data: `, line ends), framed a window of [`IOV_PARTS`] parts at
//! a time. A stream copies no payload and keeps nothing between batches: a write buffer
//! that kept its largest size held a copy of the largest batch a stream was ever sent,
//! for as long as it lived (300 streams and one 1 MiB `/broadcast` kept 308 MiB).

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info};

use crate::access::Admitted;
use crate::frames::write_raw;
use crate::metrics::Metric;
use crate::state::State;
use crate::transport::Transport;
use crate::wire::envelope::{Mode, Position, RAW, UNNUMBERED};
use crate::wire::{CloseNotice, Payload};

/// A request for an event stream, read by `handshake.rs`.
pub(crate) struct Request {
    /// The socket, past TLS if the port serves it.
    pub(crate) io: Transport,
    /// What its head said.
    pub(crate) head: Head,
}

/// The parts of an event-stream request head that matter here.
pub(crate) struct Head {
    /// The URL's query string.
    pub(crate) query: Option<String>,
    /// `Last-Event-ID` (sent by `EventSource` when it reconnects).
    pub(crate) last_event_id: Option<String>,
    /// `Origin`, to allow the response to it (CORS): an `EventSource` of a page on
    /// another origin may read the stream only then. Already checked against
    /// `--allowed-origins`.
    pub(crate) origin: Option<String>,
}

/// What `EventSource` is told to wait before it reconnects (its own default is ~3 s).
const RETRY_MS: u64 = 1000;

/// How long an HTTP refusal may take to leave.
const REFUSAL_LIMIT: Duration = Duration::from_secs(1);

/// Serves one event stream from its request to its end. `places` are the connection's
/// admission places; the pending one is given back once the uid is bound.
pub(crate) async fn serve(req: Request, ctx: Arc<State>, places: Admitted) {
    let Request {
        mut io,
        head: Head {
            query,
            last_event_id,
            origin,
        },
    } = req;
    let cors = cors_headers(origin.as_deref());
    let (uid, since) = match identify(query.as_deref(), last_event_id.as_deref(), &ctx) {
        Ok(found) => found,
        Err((status, why)) => {
            info!(status, why, "event stream refused");
            let body = format!("{why}\n");
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{cors}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = write_raw(&mut io, head.as_bytes(), REFUSAL_LIMIT).await;
            return;
        }
    };
    // `connect` before the bind, whose `online` comes between them as for a tab.
    let mut events = crate::events::ConnEvents::open(&ctx.events);
    let binding = ctx.registry.bind_as(&uid, Mode::V1 { since });
    events.bound(&ctx.events, &binding.uid_shared());
    drop(places.pending);
    debug!(uid = %crate::logsafe::escaped(binding.uid()), "event stream bound");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
         X-Accel-Buffering: no\r\n{cors}Connection: close\r\n\r\nretry: {RETRY_MS}\n\n"
    );
    let stall = ctx.config.ping_interval + ctx.config.pong_timeout;
    if write_raw(&mut io, head.as_bytes(), stall).await.is_err() {
        let uid = Some(binding.uid_shared());
        drop(binding);
        return events.closed(&ctx.events, uid, 1006, Some("write failed or stalled"));
    }
    let end = stream(&mut io, &binding, &ctx).await;
    let bound = Some(binding.uid_shared());
    drop(binding);
    // No close frame on an event stream: 1001 for the ends that say goodbye, 1006 else.
    let code = match end {
        "shutdown" | "client closed" => 1001,
        _ => 1006,
    };
    events.closed(&ctx.events, bound, code, Some(end));
    debug!(uid = %crate::logsafe::escaped(&uid), end, "event stream closed");
}

/// `Access-Control-Allow-Origin` for the request's Origin (it passed the allow-list).
fn cors_headers(origin: Option<&str>) -> String {
    match origin {
        Some(o) => format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"),
        None => String::new(),
    }
}

/// The uid (from `?uid=`, or the `sub` of `?token=` with a JWT secret) and the resume
/// point (`Last-Event-ID`, else `?since=`); or the HTTP status and reason.
fn identify(
    query: Option<&str>,
    last_event_id: Option<&str>,
    ctx: &State,
) -> Result<(String, Option<Position>), (&'static str, String)> {
    let raw = query.unwrap_or_default().as_bytes();
    let param =
        |name| crate::urlencoded::param(raw, name).map(|v| String::from_utf8(v).map_err(|_| name));
    let bad = |why: &str| ("400 Bad Request", why.to_owned());
    let max_uid = ctx.config.max_uid_bytes;
    let uid = match &ctx.settings().jwt_secret {
        Some(secret) => {
            let token = param("token")
                .ok_or_else(|| ("401 Unauthorized", "a token is required (?token=)".into()))?
                .map_err(|_| bad("token is not UTF-8"))?;
            secret
                .verify(&token, std::time::SystemTime::now())
                .map_err(|e| {
                    ctx.metrics.incr(Metric::RefusedToken);
                    ("403 Forbidden", e.to_string())
                })?
        }
        None => param("uid")
            .ok_or_else(|| bad("a uid is required (?uid=)"))?
            .map_err(|_| bad("uid is not UTF-8"))?,
    };
    if uid.is_empty() {
        return Err(bad("empty uid"));
    }
    if uid.len() > max_uid {
        return Err(bad(&format!("uid longer than {max_uid} bytes")));
    }
    let since = match last_event_id
        .map(str::to_owned)
        .or(param("since").and_then(Result::ok))
    {
        None => None,
        // EventSource sends an empty Last-Event-ID before the first id.
        Some(s) if s.is_empty() => None,
        Some(s) => Some(
            Position::parse(&s)
                .ok_or_else(|| bad("bad Last-Event-ID or since (want EPOCH:SEQ)"))?,
        ),
    };
    Ok((uid, since))
}

/// The bound stream's loop: events out, heartbeats, the peer's close. Returns why it
/// ended.
async fn stream(
    io: &mut Transport,
    binding: &crate::registry::Binding,
    ctx: &State,
) -> &'static str {
    let cfg = &ctx.config;
    let outbox = binding.outbox();
    let stall = cfg.ping_interval + cfg.pong_timeout;
    let mut batch = Vec::new();
    let mut epoch = 0u64;
    let heartbeat = sleep(cfg.ping_interval);
    tokio::pin!(heartbeat);
    let stop = ctx.ws_stop.cancelled();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => {
                // Deliver what was already accepted, then end the response.
                if outbox.try_recv(&mut batch).is_ok() && !batch.is_empty() {
                    let write = write_events(io, &batch, &mut epoch, stall);
                    let _ = timeout(cfg.shutdown_timeout, write).await;
                }
                return "shutdown";
            }
            r = outbox.recv(&mut batch) => {
                if let Err(notice) = r {
                    // Kicked or evicted: say why (an EventSource reconnects by itself;
                    // an app can listen for `close` and stop it).
                    let _ = write_raw(io, &close_event(&notice), Duration::from_secs(1)).await;
                    return "closed";
                }
                // A stuck reader must not pin the binding: its queue filling up (the
                // slow-consumer policy closes it) ends the stream at once.
                tokio::select! {
                    r = write_events(io, &batch, &mut epoch, stall) => if r.is_err() {
                        return "write failed or stalled";
                    },
                    _ = outbox.closed() => return "evicted",
                }
                binding.written(&mut batch);
                heartbeat.as_mut().reset(Instant::now() + cfg.ping_interval);
            }
            r = io.readable() => {
                if r.is_err() {
                    return "socket error";
                }
                // Nothing is expected from the client; what it sends is dropped.
                let mut sink = [0u8; 512];
                match io.try_read(&mut sink) {
                    Ok(0) => return "client closed",
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return "socket error",
                }
            }
            () = &mut heartbeat => {
                // A comment line: keeps proxies from timing the stream out, and a dead
                // peer shows as a failed or stalled write.
                if write_raw(io, b":\n\n", stall).await.is_err() {
                    return "heartbeat failed or stalled";
                }
                heartbeat.as_mut().reset(Instant::now() + cfg.ping_interval);
            }
        }
    }
}

/// Writes `batch` as events, waiting for the socket as needed, within `limit`: a
/// message of the uid's history as `id: EPOCH:SEQ` + `data:`, an unnumbered one
/// (`/broadcast`) as `data:` alone, the status frame as `event: status` (it also tells
/// `epoch`, which the ids carry).
async fn write_events(
    io: &mut Transport,
    batch: &[Payload],
    epoch: &mut u64,
    limit: Duration,
) -> io::Result<()> {
    let write = async {
        let mut window = Window::default();
        // Bytes of the window already written.
        let mut offset = 0;
        loop {
            if offset == window.len {
                window.fill(batch, epoch);
                offset = 0;
                if window.len == 0 {
                    break;
                }
            }
            // The iovecs live only for the call: never in the task across an await.
            let written = {
                let mut slices = [IoSlice::new(&[]); IOV_PARTS];
                for (slot, part) in slices.iter_mut().zip(&window.parts) {
                    *slot = IoSlice::new(window.bytes(*part, batch));
                }
                let mut bufs = &mut slices[..window.parts.len()];
                IoSlice::advance_slices(&mut bufs, offset);
                io.try_write_vectored(bufs)
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => offset += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.writable().await?,
                Err(e) => return Err(e),
            }
        }
        io.flush().await
    };
    timeout(limit, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Up to [`IOV_PARTS`] parts of a batch's events, and where the next window starts.
#[derive(Debug, Default)]
struct Window {
    /// The framing of the window's events (`id:` / `event:` lines and `data: `).
    text: Vec<u8>,
    parts: Vec<Part>,
    /// Bytes of all parts.
    len: usize,
    /// The next message to frame.
    item: usize,
    /// Within it: where its next line starts (`None`: its head is not framed yet).
    line: Option<usize>,
}

/// Bytes of an event, in write order.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// `text[start..end]`.
    Text(usize, usize),
    /// Bytes `start..end` of the batch's message `item`.
    Body {
        item: usize,
        start: usize,
        end: usize,
    },
    Static(&'static [u8]),
}

/// Iovecs per write (well under IOV_MAX, 1024), and so the most parts a stream holds
/// while it writes, whatever the batch: a payload of a million line breaks is framed a
/// window at a time, never as two million parts or a copy.
const IOV_PARTS: usize = 64;

impl Window {
    /// Frames the next parts of `batch` (none once it is all framed).
    fn fill(&mut self, batch: &[Payload], epoch: &mut u64) {
        self.text.clear();
        self.parts.clear();
        // A message's head, a line, and the line break after it fit in what is left.
        while self.parts.len() + 3 <= IOV_PARTS
            && let Some(msg) = batch.get(self.item)
        {
            let text = msg.as_bytes();
            let from = match self.line {
                Some(at) => at,
                None => self.head(msg, epoch),
            };
            let end = memchr::memchr2(b'\r', b'\n', &text[from..]).map(|n| from + n);
            let line_end = end.unwrap_or(text.len());
            if line_end > from {
                self.parts.push(Part::Body {
                    item: self.item,
                    start: from,
                    end: line_end,
                });
            }
            match end {
                // A CR would end an SSE line, so a payload's CRs become line breaks (the
                // client reads them as LF); JSON never holds a raw CR.
                Some(at) => {
                    self.parts.push(Part::Static(b"\ndata: "));
                    self.line = Some(at + 1);
                }
                None => {
                    self.parts.push(Part::Static(b"\n\n"));
                    self.item += 1;
                    self.line = None;
                }
            }
        }
        self.len = self.parts.iter().map(|p| self.part_len(*p)).sum();
    }

    /// Frames a message's head (through the first `data: `); returns where its data
    /// starts.
    fn head(&mut self, msg: &Payload, epoch: &mut u64) -> usize {
        let start = self.text.len();
        let text = msg.as_bytes();
        let from = match msg.seq() {
            RAW => {
                // `s KIND EPOCH:SEQ`, from the registry.
                let from = if text.starts_with(b"s ") { 2 } else { 0 };
                if let Some(at) = std::str::from_utf8(&text[from..])
                    .ok()
                    .and_then(|s| s.rsplit(' ').next())
                    .and_then(Position::parse)
                {
                    *epoch = at.epoch;
                }
                self.text.extend_from_slice(b"event: status\n");
                from
            }
            UNNUMBERED => 0,
            seq => {
                use std::io::Write;
                let at = Position { epoch: *epoch, seq };
                let _ = writeln!(self.text, "id: {at}");
                0
            }
        };
        self.text.extend_from_slice(b"data: ");
        self.parts.push(Part::Text(start, self.text.len()));
        from
    }

    fn part_len(&self, part: Part) -> usize {
        match part {
            Part::Text(start, end) | Part::Body { start, end, .. } => end - start,
            Part::Static(bytes) => bytes.len(),
        }
    }

    fn bytes<'a>(&'a self, part: Part, batch: &'a [Payload]) -> &'a [u8] {
        match part {
            Part::Text(start, end) => &self.text[start..end],
            Part::Body { item, start, end } => &batch[item].as_bytes()[start..end],
            Part::Static(bytes) => bytes,
        }
    }
}

/// `event: close` with the close code and reason a WebSocket would have got.
fn close_event(notice: &CloseNotice) -> Vec<u8> {
    let mut out = b"event: close\n".to_vec();
    for line in format!("{} {}", notice.code, notice.reason).split(['\r', '\n']) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window of `batch`, concatenated; and the most parts one window had.
    fn framed(batch: &[Payload], epoch: &mut u64) -> (String, usize) {
        let (mut out, mut most) = (Vec::new(), 0);
        let mut window = Window::default();
        loop {
            window.fill(batch, epoch);
            if window.len == 0 {
                return (String::from_utf8(out).unwrap(), most);
            }
            most = most.max(window.parts.len());
            for part in &window.parts {
                out.extend_from_slice(window.bytes(*part, batch));
            }
        }
    }

    #[test]
    fn events() {
        let batch = vec![
            Payload::from("s new 00000000000000ab:3".to_owned()).numbered(RAW),
            Payload::from(r#"{"uid":"u","n":4}"#.to_owned()).numbered(4),
            Payload::from("all\rof us".to_owned()),
            Payload::from("a\r\n\nb\n".to_owned()),
            Payload::from(String::new()),
        ];
        let mut epoch = 0;
        let (out, _) = framed(&batch, &mut epoch);
        assert_eq!(epoch, 0xab);
        assert_eq!(
            out,
            "event: status\ndata: new 00000000000000ab:3\n\n\
             id: 00000000000000ab:4\ndata: {\"uid\":\"u\",\"n\":4}\n\n\
             data: all\ndata: of us\n\n\
             data: a\ndata: \ndata: \ndata: b\ndata: \n\n\
             data: \n\n"
        );
    }

    /// A payload of many lines is framed a window at a time: the parts a stream holds
    /// stay bounded, and nothing is copied.
    #[test]
    fn many_lines_are_framed_a_window_at_a_time() {
        let text = "l\n".repeat(5000);
        let batch = vec![Payload::from(text.clone()), Payload::from_static("x")];
        let (out, most) = framed(&batch, &mut 0);
        assert!(most <= IOV_PARTS, "{most} parts");
        let want: String = text
            .split('\n')
            .map(|l| format!("data: {l}\n"))
            .collect::<String>()
            + "\ndata: x\n\n";
        assert!(out == want, "framed differently");
    }

    /// Many events of every size to a socket with a small send buffer: writes end
    /// mid-part and mid-window, and the stream must still be exactly the events, in
    /// order.
    #[tokio::test]
    async fn partial_writes_resume_exactly() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_send_buffer_size(4096).unwrap();
        let tcp = sock.connect(listener.local_addr().unwrap()).await.unwrap();
        let mut io = Transport::Plain(Arc::new(tcp));
        let (mut reader, _) = listener.accept().await.unwrap();
        let batch: Vec<Payload> = (0..300u64)
            .map(|i| {
                let n = [1, 100, 3000, 70_000][i as usize % 4];
                let sep = if i % 5 == 0 { "\n" } else { "" };
                Payload::from(format!("{i}:{}{sep}{}", "x".repeat(n), "y".repeat(n)))
                    .numbered(i + 1)
            })
            .collect();
        let (want, _) = framed(&batch, &mut 7);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        write_events(&mut io, &batch, &mut 7, Duration::from_secs(20))
            .await
            .unwrap();
        drop(io);
        let got = read.await.unwrap();
        assert!(got == want.as_bytes(), "bytes altered or reordered");
    }
}
