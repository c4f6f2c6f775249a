//! Real `redis-server`s for the cluster tests: a standalone one, a three-master Redis
//! Cluster, and [`on_both!`] to run one case on each.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{PushClient, STEP, poll_until};

/// A `redis-server` on 127.0.0.1, killed on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    /// One on `port` (e.g. a killed one's, to bring it back), once it listens.
    pub async fn start_on(port: u16) -> Redis {
        let child = spawn_redis(port, &std::env::temp_dir(), &[]);
        wait_listening(port).await;
        Redis { child, port }
    }

    /// One on a free port, once it listens.
    pub async fn start() -> Redis {
        Redis::start_on(free_port()).await
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL, and waits for it to exit.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Each core case runs on a standalone Redis and on a three-master Redis Cluster.
#[allow(unused_macros)]
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                let redis = Redis::start().await;
                super::$case(&redis.url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                let cluster = RedisCluster::start().await;
                super::$case(&cluster.url()).await;
            }
        }
    )*};
}

/// Three `redis-server --cluster-enabled yes` masters on free ports, joined with
/// `redis-cli --cluster create`; killed on drop.
pub struct RedisCluster {
    nodes: Vec<Redis>,
    _dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "pushwire-rc-{}-{}",
            std::process::id(),
            PROBE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("cluster node dir");
            let cluster = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ];
            let child = spawn_redis(port, &node_dir, &cluster);
            nodes.push(Redis { child, port });
        }
        for n in &nodes {
            wait_listening(n.port).await;
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {out:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &nodes[0].port.to_string(), "cluster", "info"])
                .output()
                .await
                .expect("redis-cli cluster info");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster never became ok"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RedisCluster { nodes, _dir: dir }
    }

    /// The first master's port.
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, n) in self.nodes[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port));
        }
        url
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

pub static PROBE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `redis-server` on 127.0.0.1:`port`, working in `dir`, with `extra` flags; killed
/// when its handle drops.
pub fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .current_dir(dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it)")
}

/// Waits until something accepts connections on 127.0.0.1:`port` (15 s at most: a
/// loaded 2-core CI box may take a while to start three masters at once).
pub async fn wait_listening(port: u16) {
    let deadline = Instant::now() + 3 * STEP;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `line` on a fresh connection to `addr` every 10 ms until its reply contains
/// `needle`; panics with `what` after `d`.
pub async fn until_reply(
    addr: std::net::SocketAddr,
    line: &str,
    needle: &str,
    d: Duration,
    what: &str,
) {
    poll_until(d, what, || async move {
        let mut p = PushClient::connect(addr).await;
        p.request(line).await.contains(needle)
    })
    .await;
}

/// `GET /readyz` over a raw socket: the whole response.
pub async fn readyz(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write request");
    let mut out = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

/// An in-process node in cluster mode on `url` (with the HTTP door), keeping
/// `history_messages` per uid, returned once its Redis link is up: until then a node
/// answers what needs Redis with fail and keeps nothing (pushes fail fast, never held).
pub async fn cluster_node(url: &str, history_messages: usize) -> super::TestServer {
    let server = super::TestServer::start_http(pushwire::Config {
        redis: Some(url.to_owned()),
        cluster_timeout: Duration::from_millis(2000),
        history_messages,
        queue_depth: history_messages.max(1024),
        ..pushwire::Config::default()
    })
    .await;
    let http = server.http_addr.expect("http door");
    poll_until(STEP, "the node ready (its Redis link up)", || async move {
        readyz(http).await.starts_with("HTTP/1.1 200")
    })
    .await;
    server
}

/// An in-process node in cluster mode whose Redis is unreachable (a port nothing listens
/// on), giving up on Redis after `cluster_timeout`.
pub async fn node_without_redis(cluster_timeout: Duration) -> super::TestServer {
    let dead = format!("redis://127.0.0.1:{}/", free_port());
    super::TestServer::start_with(pushwire::Config {
        redis: Some(dead),
        cluster_timeout,
        ..pushwire::Config::default()
    })
    .await
}
