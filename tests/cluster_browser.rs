//! Headless Chromium runs `pushwire.js` against two real nodes in cluster mode behind a
//! load balancer (a TCP forwarder in the test, standing in for nginx or HAProxy): the node
//! the page is on is killed with -9, the balancer sends the reconnect to the other node,
//! and the page resumes there from the history in Redis with nothing lost or doubled.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::chromium::{PageEvent, SeedPage, pushwire_page};
use common::redis::Redis;
use common::*;
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection to `backends[current]`; switching `current` sends new
/// connections elsewhere (connections already forwarded stay where they are).
struct Balancer {
    addr: SocketAddr,
    current: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let current = Arc::new(AtomicUsize::new(0));
        let to = current.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backend = backends[to.load(Ordering::SeqCst)];
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Balancer {
            addr,
            current,
            task,
        }
    }

    fn switch_to(&self, i: usize) {
        self.current.store(i, Ordering::SeqCst);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn event(page: &mut SeedPage) -> String {
    match page.next_event_within(Duration::from_secs(15)).await {
        PageEvent::Alert(m) => format!("msg {m}"),
        PageEvent::Trouble(t) => t,
    }
}

/// A node on free ports in cluster mode, started once its Redis link is up.
async fn node(url: &str) -> Daemon {
    let daemon = Launch::new().args(&["--redis", url]).start().await;
    let http = daemon.http_addr.expect("http door");
    poll_until(STEP, "the node ready", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    daemon
}

fn line(n: u64) -> String {
    format!(r#"{{"uid":"jsc","n":{n}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_pushwire_js_resumes_on_another_node_after_kill_9() {
    let redis = Redis::start().await;
    let url = redis.url();
    let mut a = node(&url).await;
    let b = node(&url).await;
    let lb = Balancer::start(vec![a.ws_addr, b.ws_addr]).await;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut page = SeedPage::launch_html(http, pushwire_page(lb.addr.port(), "jsc"), &[]);
    assert_eq!(event(&mut page).await, "connected new");

    // Pushed through node B to the page on node A: numbered by the one history.
    let mut push = PushClient::connect(b.push_addr).await;
    for n in 1..=3 {
        assert_eq!(push.request(&line(n)).await, "ok\n");
        assert_eq!(event(&mut page).await, format!("msg {n} {}", line(n)));
    }
    // Node A dies with the page on it; the balancer sends the reconnect to B. Pushes
    // meanwhile reach nobody (fail) but are numbered and kept in Redis.
    a.kill9();
    lb.switch_to(1);
    for n in 4..=6 {
        let reply = push.request(&line(n)).await;
        assert!(reply == "ok\n" || reply == "fail\n", "{reply}");
    }
    assert_eq!(event(&mut page).await, "connected recovered");
    for n in 4..=6 {
        assert_eq!(event(&mut page).await, format!("msg {n} {}", line(n)));
    }
    push_until(&mut push, &line(7), "ok\n", STEP).await;
    assert_eq!(event(&mut page).await, format!("msg 7 {}", line(7)));
    assert!(
        !page.reports_within(Duration::from_millis(300)).await,
        "an unexpected report (a duplicate?)"
    );
}
