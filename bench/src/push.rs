//! The push (backend) side: a pipelined push connection with a bounded in-flight window, and
//! strict parsing of the `ok\n` / `fail\n` replies.

use crate::client::Fleet;
use crate::track::{self, Run, now_ns};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, mpsc};

/// One push: its sequence number (unique in the process) and the index of the target client.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub seq: u64,
    pub uid: u32,
}

/// Where a pipeline's pushes come from.
pub enum Source {
    /// A fixed sequence (throughput, fan-out).
    Iter(Box<dyn Iterator<Item = Item> + Send>),
    /// Pushes arriving over time (storm probes) until `stop` is notified.
    Chan(mpsc::UnboundedReceiver<Item>, Arc<Notify>),
}

pub struct PipeOpts {
    /// Maximum pushes written but not yet answered.
    pub window: usize,
    /// Maximum pushes per write.
    pub batch: usize,
    /// Format everything before the first write, then write it in one go (fan-out).
    pub prebuild: bool,
    /// Where to send pushes answered `fail` (storm probes retry them); None = just record.
    pub retry: Option<mpsc::UnboundedSender<Item>>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PipeStats {
    pub written: u64,
    pub oks: u64,
    pub fails: u64,
    pub first_write_ns: u64,
    pub last_reply_ns: u64,
    pub last_ok_ns: u64,
}

/// Counts of replies answered by a reply parser.
pub enum Reply {
    Ok,
    Fail,
}

/// Incremental parser of the reply stream: exactly `ok\n` or `fail\n`, nothing else.
#[derive(Default)]
pub struct ReplyParser {
    line: Vec<u8>,
}

impl ReplyParser {
    pub fn feed(&mut self, bytes: &[u8], mut on: impl FnMut(Reply)) -> Result<(), String> {
        for &b in bytes {
            if b == b'\n' {
                match self.line.as_slice() {
                    b"ok" => on(Reply::Ok),
                    b"fail" => on(Reply::Fail),
                    other => {
                        return Err(format!(
                            "unexpected reply line {:?}",
                            String::from_utf8_lossy(other)
                        ));
                    }
                }
                self.line.clear();
            } else {
                if self.line.len() >= 8 {
                    return Err(format!(
                        "unexpected reply bytes {:?}",
                        String::from_utf8_lossy(&self.line)
                    ));
                }
                self.line.push(b);
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }
}

struct Shared {
    queue: Mutex<VecDeque<Item>>,
    written: AtomicU64,
    writer_done: AtomicBool,
    wake_reader: Notify,
    first_write_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one pipelined push connection to completion: every push of `src` written, every reply
/// read and recorded into `run`. Errors are logged; the stats cover what happened.
pub async fn pipeline(
    stream: TcpStream,
    run: &'static Run,
    fleet: &'static Fleet,
    src: Source,
    o: PipeOpts,
) -> PipeStats {
    let (rd, wr) = stream.into_split();
    let sem = Semaphore::new(o.window.clamp(1, Semaphore::MAX_PERMITS));
    let sh = Shared {
        queue: Mutex::new(VecDeque::new()),
        written: AtomicU64::new(0),
        writer_done: AtomicBool::new(false),
        wake_reader: Notify::new(),
        first_write_ns: AtomicU64::new(0),
    };
    let w = writer(wr, run, fleet, src, &o, &sem, &sh);
    let r = reader(rd, run, &o, &sem, &sh);
    // The writer hands back its half so the socket is not half-closed before the reader is done.
    let (_write_half, mut stats) = tokio::join!(w, r);
    stats.written = sh.written.load(Ordering::Acquire);
    stats.first_write_ns = sh.first_write_ns.load(Ordering::Acquire);
    stats
}

async fn writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    run: &'static Run,
    fleet: &'static Fleet,
    mut src: Source,
    o: &PipeOpts,
    sem: &Semaphore,
    sh: &Shared,
) -> tokio::net::tcp::OwnedWriteHalf {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut items: Vec<Item> = Vec::with_capacity(o.batch);
    let uid_of = |it: &Item| {
        fleet
            .uids
            .get(it.uid as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    if o.prebuild {
        if let Source::Iter(it) = &mut src {
            let all: Vec<Item> = it.collect();
            let t = now_ns();
            for i in &all {
                track::write_line(&mut buf, uid_of(i), i.seq, t, run.pad);
            }
            lock(&sh.queue).extend(all.iter().copied());
            sh.written.store(all.len() as u64, Ordering::Release);
            sh.first_write_ns.store(now_ns(), Ordering::Release);
            if let Err(e) = wr.write_all(&buf).await {
                track::error(format!("{}: push write failed: {e}", run.name));
            }
        }
    } else {
        loop {
            // Wait for room in the window, then take whatever else is free (up to a batch).
            let Ok(p) = sem.acquire().await else { break };
            p.forget();
            let extra = sem.available_permits().min(o.batch.saturating_sub(1));
            let mut permits = 1;
            if extra > 0
                && let Ok(p) = sem.try_acquire_many(extra as u32)
            {
                p.forget();
                permits += extra;
            }
            items.clear();
            match &mut src {
                Source::Iter(it) => items.extend(it.take(permits)),
                Source::Chan(rx, stop) => {
                    tokio::select! {
                        it = rx.recv() => if let Some(it) = it { items.push(it) },
                        () = stop.notified() => {}
                    }
                    while items.len() < permits
                        && !items.is_empty()
                        && let Ok(it) = rx.try_recv()
                    {
                        items.push(it);
                    }
                }
            }
            if items.len() < permits {
                sem.add_permits(permits - items.len());
            }
            if items.is_empty() {
                break;
            }
            buf.clear();
            let t = now_ns();
            for i in &items {
                track::write_line(&mut buf, uid_of(i), i.seq, t, run.pad);
            }
            lock(&sh.queue).extend(items.iter().copied());
            if sh.written.fetch_add(items.len() as u64, Ordering::AcqRel) == 0 {
                sh.first_write_ns.store(now_ns(), Ordering::Release);
            }
            if let Err(e) = wr.write_all(&buf).await {
                track::error(format!("{}: push write failed: {e}", run.name));
                break;
            }
        }
    }
    sh.writer_done.store(true, Ordering::Release);
    sh.wake_reader.notify_one();
    wr
}

async fn reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    run: &'static Run,
    o: &PipeOpts,
    sem: &Semaphore,
    sh: &Shared,
) -> PipeStats {
    let mut st = PipeStats::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = ReplyParser::default();
    let mut answered = 0u64;
    loop {
        if sh.writer_done.load(Ordering::Acquire) && answered >= sh.written.load(Ordering::Acquire)
        {
            break;
        }
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => {
                    track::error(format!(
                        "{}: server closed the push connection with {} push(es) unanswered",
                        run.name,
                        sh.written.load(Ordering::Acquire) - answered
                    ));
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    track::error(format!("{}: push read failed: {e}", run.name));
                    break;
                }
            },
            () = sh.wake_reader.notified() => continue,
        };
        let now = now_ns();
        let mut q = lock(&sh.queue);
        let mut got = 0usize;
        let res = parser.feed(&buf[..n], |r| {
            got += 1;
            let Some(item) = q.pop_front() else {
                track::error(format!("{}: reply without a pending push", run.name));
                return;
            };
            match r {
                Reply::Ok => {
                    st.oks += 1;
                    st.last_ok_ns = now;
                    run.record_reply(item.seq, true);
                }
                Reply::Fail => {
                    st.fails += 1;
                    run.record_reply(item.seq, false);
                    if let Some(tx) = &o.retry {
                        let _ = tx.send(item);
                    }
                }
            }
        });
        drop(q);
        if got > 0 {
            st.last_reply_ns = now;
            answered += got as u64;
            sem.add_permits(got);
        }
        if let Err(e) = res {
            track::error(format!("{}: {e}", run.name));
            break;
        }
    }
    if !parser.is_empty() {
        track::error(format!("{}: partial reply line at the end", run.name));
    }
    // Unblock a writer that might wait for permits after an error.
    sem.close();
    st
}
