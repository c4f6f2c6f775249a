//! `events-webhook`: what one event costs the daemon's side when a webhook receiver is
//! attached (docs/events.md): encoding, the queue, batching, signing, the HTTP POST.
//!
//! This drives the library's `events::Hub` in this process, exactly as the daemon's
//! sources do, on one
//! current-thread runtime: every cycle the publishing and the sending cost is spent on
//! this process's threads. The receiver is a child process (`events-receiver`, hidden),
//! a hyper server that answers 204 and counts the events it took, so its CPU is not ours.
//!
//! Two passes publish the same paced load (`--events`, at `--rate` per second): with no
//! listener (the pacing loop and `publish`'s early return: the baseline), then with the
//! receiver attached until every event is taken. `cpu_us_per_event` is the difference of
//! the two passes' CPU (schedstat of this process's threads) over the events. The check:
//! the receiver took exactly the events published.

use std::io::{BufRead as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pushwire::auth::Secret;
use pushwire::events::{EventsConfig, Hub, Listener, What};
use pushwire::metrics::{Metric, Metrics};

use crate::Opts;
use crate::procstat;
use crate::report::Report;

/// Runs the scenario; the exit code.
pub fn run(o: &Opts, events: Option<u64>, rate: Option<u64>) -> i32 {
    let n = o.pick(events, 100_000, 10_000).max(1);
    let rate = o.pick(rate, 20_000, 20_000).max(1);
    match measure(n, rate) {
        Ok(report) => {
            report.print(o.json_only);
            if report.ok { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("pushwire-bench: events-webhook: {e}");
            2
        }
    }
}

fn measure(n: u64, rate: u64) -> Result<Report, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(me)
        .arg("events-receiver")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn the receiver: {e}"))?;
    let mut out = std::io::BufReader::new(child.stdout.take().ok_or("receiver stdout")?);
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let port: u16 = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("receiver said {line:?}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let (base_ns, base_wall) = rt.block_on(pass(None, n, rate))?;
    let (hook_ns, hook_wall) = rt.block_on(pass(Some(&url), n, rate))?;
    drop(child.stdin.take());
    line.clear();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let _ = child.wait();
    let taken: u64 = line
        .trim()
        .strip_prefix("taken ")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("receiver said {line:?}"))?;

    let mut r = Report::new("events-webhook");
    r.int("events", "events published per pass", n);
    r.int("rate", "paced at (events/s)", rate);
    r.int("taken", "events the receiver took", taken);
    r.num(
        "baseline_cpu_us_per_event",
        "CPU per event, no listener (pacing + publish's early return)",
        base_ns as f64 / 1000.0 / n as f64,
        3,
        "µs",
    );
    r.num(
        "attached_cpu_us_per_event",
        "CPU per event, receiver attached (all of it)",
        hook_ns as f64 / 1000.0 / n as f64,
        3,
        "µs",
    );
    r.num(
        "cpu_us_per_event",
        "CPU per event sent (attached − baseline)",
        hook_ns.saturating_sub(base_ns) as f64 / 1000.0 / n as f64,
        3,
        "µs",
    );
    r.num(
        "wall_s",
        "wall time with the receiver (paced)",
        hook_wall.as_secs_f64(),
        2,
        "s",
    );
    r.num(
        "baseline_wall_s",
        "wall time, no listener",
        base_wall.as_secs_f64(),
        2,
        "s",
    );
    if taken != n {
        eprintln!("events-webhook: the receiver took {taken} of {n} events");
        r.ok = false;
    }
    Ok(r.finish())
}

/// Publishes `n` events paced at `rate`/s (to `url`, or to no listener) and waits until
/// the receiver took them all; this process's CPU (ns) and the wall time.
async fn pass(url: Option<&str>, n: u64, rate: u64) -> Result<(u64, Duration), String> {
    let config = EventsConfig {
        listeners: Listener::parse_all(&url.into_iter().collect::<Vec<_>>())?,
        queue: n as usize,
        ..EventsConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let hub = Hub::with_tls(
        &config,
        Some(Secret::new("bench")),
        "bench".into(),
        metrics.clone(),
        None,
    )?;
    let pid = std::process::id().to_string();
    let cpu = || procstat::sched_ns(&pid).unwrap_or(0);
    let (cpu0, t0) = (cpu(), Instant::now());
    // A tick per millisecond, each publishing what the rate owes by then.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let conn: Arc<str> = "bench-1".into();
    let mut sent = 0u64;
    while sent < n {
        tick.tick().await;
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(n);
        while sent < due {
            sent += 1;
            let uid: Arc<str> = format!("u{}", sent % 1000).into();
            hub.publish(
                What::Bind {
                    conn: conn.clone(),
                    uid,
                    client_id: None,
                },
                sent,
            );
        }
    }
    if url.is_some() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics.value(Metric::EventsSent) < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {n} events taken within 60 s",
                    metrics.value(Metric::EventsSent)
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok((cpu().saturating_sub(cpu0), t0.elapsed()))
}

/// The receiver child: serves 127.0.0.1:0, prints `port N`, answers every POST 204 and
/// counts the events in it; at stdin's end prints `taken N`.
pub fn receiver() -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("events-receiver: {e}");
            return 2;
        }
    };
    let taken = Arc::new(AtomicU64::new(0));
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("port {}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        });
        let serve = {
            let taken = taken.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let taken = taken.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let taken = taken.clone();
                            async move { Ok::<_, std::convert::Infallible>(take(req, &taken).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                    });
                }
            }
        };
        tokio::select! {
            _ = stdin_closed => {}
            () = serve => {}
        }
        Ok::<_, std::io::Error>(())
    });
    if let Err(e) = result {
        eprintln!("events-receiver: {e}");
        return 2;
    }
    println!("taken {}", taken.load(Ordering::Relaxed));
    0
}

async fn take(
    req: hyper::Request<hyper::body::Incoming>,
    taken: &AtomicU64,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let n = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["events"].as_array().map(Vec::len))
        .unwrap_or(0);
    taken.fetch_add(n as u64, Ordering::Relaxed);
    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
    resp
}
