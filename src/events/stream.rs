//! `/events [TYPES]` on the push port: the connection becomes a stream of one JSON event
//! per line, so `nc` or a PHP loop around `fgets` can follow what happens.
//!
//! ```text
//! > /events online,offline
//! < {"ok":true,"types":["online","offline"]}
//! < {"type":"online","seq":1767225600000001,"node":"...","time_ms":...,"uid":"alice"}
//! <                                     (an empty line: a keep-alive, every 15 s of quiet)
//! < {"ok":false,"error":"too slow: 5000 events lost; connect again"}   (then the close)
//! ```
//!
//! # Bounds
//! Every subscriber reads one shared ring of the last `--events-stream-buffer` events
//! (rounded up to a power of two), each from its own place in it: one copy of each event
//! however many read it, and a publish never waits for a reader. A reader that falls a
//! whole ring behind (the events it has not read were overwritten) is cut with the reason
//! line above and counted (`event_streams_cut`); so is one whose socket takes no bytes
//! for the write timeout (`--push-idle-timeout-ms`), without a line: it reads nothing.
//! What the backend sends after `/events` is read and ignored; a reader that closed its
//! sending side still gets the stream (`nc -N`), so a vanished reader is found by its
//! writes failing or timing out (the keep-alive lines write at least every 15 s).

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::event::Encoded;
use super::filter::Kinds;
use crate::metrics::{Metric, Metrics};

/// A quiet stream gets an empty line this often, so a reader's read timeout (PHP's
/// `default_socket_timeout` is 60 s) does not fire and a vanished reader is noticed.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How many bytes of events one write takes at most.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The filter a `/events` line asks for: `None` if the line is not `/events`, else the
/// kinds or why the list is refused. No list is `*` (every kind but `message`).
pub fn request(line: &[u8]) -> Option<Result<Kinds, String>> {
    let rest = line.strip_prefix(b"/events")?;
    let list = match rest {
        [] => return Some(Ok(Kinds::DEFAULT)),
        [b' ', list @ ..] => list,
        _ => return None,
    };
    let list = match std::str::from_utf8(list) {
        Ok(list) if !list.trim().is_empty() => list.trim(),
        Ok(_) => return Some(Ok(Kinds::DEFAULT)),
        Err(_) => return Some(Err("the event types are not UTF-8".to_owned())),
    };
    Some(Kinds::parse(list))
}

/// One reader's place in the ring, with its filter; counted in `event_streams` while it
/// lives.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Encoded>,
    kinds: Kinds,
    metrics: std::sync::Arc<Metrics>,
}

/// What a reader gets next.
#[derive(Debug)]
pub enum Next {
    /// An event it asked for.
    Event(Encoded),
    /// It fell a whole ring behind: this many events were lost to it.
    Cut(u64),
    /// The daemon is stopping its events.
    Ended,
}

impl Subscription {
    pub(crate) fn new(
        rx: broadcast::Receiver<Encoded>,
        kinds: Kinds,
        metrics: std::sync::Arc<Metrics>,
    ) -> Subscription {
        metrics.incr(Metric::EventStreams);
        Subscription { rx, kinds, metrics }
    }

    /// Its filter.
    pub fn kinds(&self) -> Kinds {
        self.kinds
    }

    /// The next event it wants (cancel-safe: nothing is lost if the future is dropped).
    pub async fn next(&mut self) -> Next {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.kinds.contains(event.kind) => return Next::Event(event),
                Ok(_) => {}
                Err(RecvError::Lagged(lost)) => return Next::Cut(lost),
                Err(RecvError::Closed) => return Next::Ended,
            }
        }
    }

    /// The next event it wants if one is already there.
    pub fn try_next(&mut self) -> Option<Next> {
        loop {
            match self.rx.try_recv() {
                Ok(event) if self.kinds.contains(event.kind) => return Some(Next::Event(event)),
                Ok(_) => {}
                Err(TryRecvError::Lagged(lost)) => return Some(Next::Cut(lost)),
                Err(TryRecvError::Closed) => return Some(Next::Ended),
                Err(TryRecvError::Empty) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.metrics.sub(Metric::EventStreams, 1);
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The reader closed its side.
    Closed,
    /// The reader fell a ring behind (told so).
    Slow,
    /// Its socket took nothing for the write timeout.
    Stuck,
    /// The daemon is stopping.
    Shutdown,
}

#[derive(Serialize)]
struct Subscribed {
    ok: bool,
    types: Vec<&'static str>,
}

#[derive(Serialize)]
struct Closing {
    ok: bool,
    error: String,
}

/// Serves the stream on `io` until the reader leaves, is cut, or `stop`: the `ok` line,
/// then the events. `write_timeout` bounds every write.
pub async fn serve<S>(
    io: &mut S,
    mut sub: Subscription,
    stop: &CancellationToken,
    write_timeout: Duration,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    let hello = Subscribed {
        ok: true,
        types: sub.kinds.iter().map(|k| k.name()).collect(),
    };
    line(&mut out, &hello);
    if let Some(end) = write(io, &mut out, write_timeout, &sub).await {
        return end;
    }
    let mut sink = [0u8; 1024];
    // A reader that closed its sending side (`nc -N`, `shutdown(SHUT_WR)`) still reads;
    // one that closed the whole socket is found by writing to it: two blank lines right
    // away (the second fails once the first drew a reset).
    let mut reading = true;
    let mut quiet_until = Instant::now() + KEEPALIVE;
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return finish(io, &mut out, "shutting down", End::Shutdown, write_timeout, &sub).await,
            read = io.read(&mut sink), if reading => match read {
                Ok(0) => {
                    reading = false;
                    quiet_until = Instant::now();
                    continue;
                }
                Ok(_) => continue,
                Err(_) => return End::Closed,
            },
            next = sub.next() => next,
            () = tokio::time::sleep_until(quiet_until) => {
                out.put_u8(b'\n');
                if let Some(end) = write(io, &mut out, write_timeout, &sub).await {
                    return end;
                }
                quiet_until = Instant::now()
                    + if reading { KEEPALIVE } else { PROBE.min(KEEPALIVE) };
                continue;
            }
        };
        let mut next = Some(next);
        // Everything already there goes in one write.
        while let Some(n) = next.take() {
            match n {
                Next::Event(event) => {
                    out.extend_from_slice(&event.json);
                    out.put_u8(b'\n');
                    if out.len() < WRITE_BATCH_BYTES {
                        next = sub.try_next();
                    }
                }
                Next::Cut(lost) => {
                    sub.metrics.incr(Metric::EventStreamsCut);
                    let why = format!("too slow: {lost} events lost; connect again");
                    return finish(io, &mut out, &why, End::Slow, write_timeout, &sub).await;
                }
                Next::Ended => {
                    return finish(
                        io,
                        &mut out,
                        "shutting down",
                        End::Shutdown,
                        write_timeout,
                        &sub,
                    )
                    .await;
                }
            }
        }
        if let Some(end) = write(io, &mut out, write_timeout, &sub).await {
            return end;
        }
        quiet_until = Instant::now() + KEEPALIVE;
    }
}

/// After a reader half-closed, how soon the next blank line probes whether it is still
/// there.
const PROBE: Duration = Duration::from_millis(200);

/// Writes what is in `out` and the closing line `why`; `end`, unless the write says
/// otherwise.
async fn finish<S>(
    io: &mut S,
    out: &mut BytesMut,
    why: &str,
    end: End,
    limit: Duration,
    sub: &Subscription,
) -> End
where
    S: AsyncWrite + Unpin,
{
    line(
        out,
        &Closing {
            ok: false,
            error: why.to_owned(),
        },
    );
    write(io, out, limit, sub).await.unwrap_or(end)
}

fn line<T: Serialize>(out: &mut BytesMut, value: &T) {
    let mut w = out.writer();
    // Serializing these types into memory cannot fail.
    let _ = serde_json::to_writer(&mut w, value);
    w.into_inner().put_u8(b'\n');
}

/// Writes and clears `out`: `None` when done, else how the stream ends (the reader is
/// gone, or its socket took nothing within `limit`: counted as a cut).
async fn write<S>(
    io: &mut S,
    out: &mut BytesMut,
    limit: Duration,
    sub: &Subscription,
) -> Option<End>
where
    S: AsyncWrite + Unpin,
{
    let done = tokio::time::timeout(limit, io.write_all(out)).await;
    out.clear();
    match done {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(End::Closed),
        Err(_) => {
            sub.metrics.incr(Metric::EventStreamsCut);
            Some(End::Stuck)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;
    use crate::events::event::Kind;

    fn ev(kind: Kind, n: u64) -> Encoded {
        Encoded {
            kind,
            json: Bytes::from(format!("{{\"type\":\"{}\",\"seq\":{n}}}", kind.name())),
        }
    }

    #[test]
    fn the_request_line() {
        assert_eq!(request(b"/events"), Some(Ok(Kinds::DEFAULT)));
        assert_eq!(request(b"/events "), Some(Ok(Kinds::DEFAULT)));
        assert_eq!(
            request(b"/events online,offline").map(|k| k.map(Kinds::names)),
            Some(Ok("online,offline".to_owned()))
        );
        assert_eq!(
            request(b"/events *,message").map(|k| k.map(|k| k.contains(Kind::Message))),
            Some(Ok(true))
        );
        assert!(matches!(request(b"/events nope"), Some(Err(e)) if e.contains("unknown")));
        assert!(matches!(request(b"/events \xff"), Some(Err(_))));
        assert_eq!(request(b"/eventsx"), None);
        assert_eq!(request(b"/event"), None);
        assert_eq!(request(b"{\"uid\":\"x\"}"), None);
    }

    #[tokio::test]
    async fn a_reader_gets_its_kinds_in_order() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = broadcast::channel(8);
        let mut sub = Subscription::new(rx, Kinds::parse("online").unwrap(), metrics.clone());
        assert_eq!(metrics.value(Metric::EventStreams), 1);
        tx.send(ev(Kind::Online, 1)).unwrap();
        tx.send(ev(Kind::Close, 2)).unwrap();
        tx.send(ev(Kind::Online, 3)).unwrap();
        for want in [1, 3] {
            match sub.next().await {
                Next::Event(e) => assert!(e.json.ends_with(format!("{want}}}").as_bytes())),
                other => panic!("{other:?}"),
            }
        }
        assert!(sub.try_next().is_none());
        drop(sub);
        assert_eq!(metrics.value(Metric::EventStreams), 0);
    }

    #[tokio::test]
    async fn a_reader_a_ring_behind_is_cut_with_the_count() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = broadcast::channel(4);
        let mut sub = Subscription::new(rx, Kinds::DEFAULT, metrics.clone());
        for n in 0..4 {
            tx.send(ev(Kind::Online, n)).unwrap();
        }
        // Exactly the ring: nothing lost yet.
        assert!(matches!(sub.try_next(), Some(Next::Event(_))));
        for n in 4..10 {
            tx.send(ev(Kind::Online, n)).unwrap();
        }
        // 10 sent, 1 read, ring of 4: events 1 to 5 were overwritten.
        assert!(matches!(sub.next().await, Next::Cut(5)), "cut");
        // Events it filters out count for the ring too: a reader must keep up with all.
        let (tx, rx) = broadcast::channel(2);
        let mut sub = Subscription::new(rx, Kinds::parse("offline").unwrap(), metrics);
        for n in 0..5 {
            tx.send(ev(Kind::Online, n)).unwrap();
        }
        assert!(matches!(sub.try_next(), Some(Next::Cut(3))));
    }

    /// The whole loop over a real socket pair: hello, events, the cut line, the count.
    #[tokio::test]
    async fn serve_writes_lines_and_cuts_a_slow_reader() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = broadcast::channel(4);
        let sub = Subscription::new(rx, Kinds::parse("online,close").unwrap(), metrics.clone());
        let (mut server, client) = tokio::io::duplex(64 * 1024);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { serve(&mut server, sub, &stop, Duration::from_secs(5)).await }
        });
        let mut lines = BufReader::new(client).lines();
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            r#"{"ok":true,"types":["online","close"]}"#
        );
        tx.send(ev(Kind::Online, 1)).unwrap();
        tx.send(ev(Kind::Bind, 2)).unwrap();
        tx.send(ev(Kind::Close, 3)).unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            r#"{"type":"online","seq":1}"#
        );
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            r#"{"type":"close","seq":3}"#
        );
        // Overrun the ring faster than the task can take it: sent in one go, with the
        // task not scheduled in between (current-thread runtime).
        for n in 10..30 {
            let _ = tx.send(ev(Kind::Online, n));
        }
        let mut rest = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            rest.push(l);
        }
        assert_eq!(
            rest.last().map(String::as_str),
            Some(r#"{"ok":false,"error":"too slow: 16 events lost; connect again"}"#),
            "{rest:?}"
        );
        assert_eq!(task.await.unwrap(), End::Slow);
        assert_eq!(metrics.value(Metric::EventStreamsCut), 1);
        assert_eq!(metrics.value(Metric::EventStreams), 0);
    }

    #[tokio::test]
    async fn serve_ends_on_shutdown_and_on_the_readers_close() {
        let metrics = Arc::new(Metrics::default());
        let (_tx, rx) = broadcast::channel::<Encoded>(4);
        let sub = Subscription::new(rx, Kinds::DEFAULT, metrics.clone());
        let (mut server, client) = tokio::io::duplex(4096);
        let stop = CancellationToken::new();
        stop.cancel();
        let end = serve(&mut server, sub, &stop, Duration::from_secs(5)).await;
        assert_eq!(end, End::Shutdown);
        drop(server);
        let mut text = String::new();
        BufReader::new(client)
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert!(
            text.ends_with("{\"ok\":false,\"error\":\"shutting down\"}\n"),
            "{text}"
        );

        let (_tx, rx) = broadcast::channel::<Encoded>(4);
        let sub = Subscription::new(rx, Kinds::DEFAULT, metrics);
        let (mut server, client) = tokio::io::duplex(4096);
        drop(client);
        let end = serve(
            &mut server,
            sub,
            &CancellationToken::new(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            end,
            End::Closed,
            "the hello cannot be written to a closed pipe"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_keepalives_and_a_stuck_one_is_cut() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = broadcast::channel::<Encoded>(1024);
        let sub = Subscription::new(rx, Kinds::DEFAULT, metrics.clone());
        // A pipe of 64 bytes that nobody reads after the first line.
        let (mut server, client) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            serve(
                &mut server,
                sub,
                &CancellationToken::new(),
                Duration::from_secs(10),
            )
            .await
        });
        let mut client = BufReader::new(client);
        let mut hello = String::new();
        client.read_line(&mut hello).await.unwrap();
        tokio::time::sleep(KEEPALIVE + Duration::from_millis(10)).await;
        let mut blank = String::new();
        client.read_line(&mut blank).await.unwrap();
        assert_eq!(blank, "\n");
        for n in 0..100 {
            tx.send(ev(Kind::Online, n)).unwrap();
        }
        assert_eq!(task.await.unwrap(), End::Stuck);
        assert_eq!(metrics.value(Metric::EventStreamsCut), 1);
    }
}
