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
        let mut child = spawn_redis(port, &std::env::temp_dir(), &[]);
        assert!(
            serving(&mut child, port).await,
            "redis-server could not listen on {port}"
        );
        Redis { child, port }
    }

    /// One on a free port, once it listens (on another if that one was taken).
    pub async fn start() -> Redis {
        loop {
            let port = free_port();
            let mut child = spawn_redis(port, &std::env::temp_dir(), &[]);
            if serving(&mut child, port).await {
                return Redis { child, port };
            }
        }
    }

    /// One that speaks TLS only (`--port 0`: no plain listener at all), serving `cert`,
    /// with `extra` flags, once it listens; its URL is `rediss://…` ([`Redis::tls_url`]).
    pub async fn start_tls(cert: &super::TestCert, extra: &[&str]) -> Redis {
        let files = cert.files();
        let (cert_pem, key_pem) = (
            files.cert.to_str().expect("utf-8 path"),
            files.key.to_str().expect("utf-8 path"),
        );
        let port = free_port();
        let tls_port = port.to_string();
        let mut flags = vec![
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            cert_pem,
            "--tls-key-file",
            key_pem,
            "--tls-ca-cert-file",
            cert_pem,
            "--tls-auth-clients",
            "no",
        ];
        flags.extend_from_slice(extra);
        let child = spawn_redis(0, &std::env::temp_dir(), &flags);
        wait_listening(port).await;
        Redis { child, port }
    }

    /// `rediss://127.0.0.1:PORT/` (a TLS-only one: [`Redis::start_tls`]).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli` arguments that reach it.
    pub fn cli_args(&self) -> Vec<String> {
        vec!["-p".into(), self.port.to_string()]
    }

    /// SIGKILL, and waits for it to exit.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// `redis-cli ARGS` against it: its standard output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(self.cli_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many keys match `pattern` (`KEYS`: for tests only).
    pub async fn count_keys(&self, pattern: &str) -> usize {
        self.cli(&["KEYS", pattern]).await.lines().count()
    }

    /// Scripts it has run so far (`INFO commandstats`: `EVAL` and `EVALSHA` calls).
    pub async fn script_calls(&self) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]).await;
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

/// A TCP proxy on 127.0.0.1 to a local port that holds each new connection for `hold`
/// before it relays anything, either way: a Redis slow to open a link (a TLS handshake
/// to a distant one, a SYN retransmitted). Stops on drop.
pub struct SlowToOpen {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SlowToOpen {
    pub async fn start(upstream: u16, hold: Duration) -> SlowToOpen {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let task = tokio::spawn(async move {
            while let Ok((mut near, _)) = listener.accept().await {
                tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    if let Ok(mut far) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
                    }
                });
            }
        });
        SlowToOpen { port, task }
    }
}

impl Drop for SlowToOpen {
    fn drop(&mut self) {
        self.task.abort();
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
    /// The certificate every master serves (and clients trust), for a TLS-only cluster.
    tls: Option<std::path::PathBuf>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        loop {
            let ports = [free_port(), free_port(), free_port()];
            if let Some(cluster) = RedisCluster::launch(None, ports).await {
                return cluster;
            }
        }
    }

    /// One on these three ports (e.g. ones a node was told to use before they served).
    pub async fn start_on(ports: [u16; 3]) -> RedisCluster {
        RedisCluster::launch(None, ports)
            .await
            .unwrap_or_else(|| panic!("a Redis Cluster master could not listen on {ports:?}"))
    }

    /// `redis-cluster://` (`rediss-cluster://` with `tls`) for masters on `ports`.
    pub fn url_of(ports: [u16; 3], tls: bool) -> String {
        let scheme = if tls {
            "rediss-cluster"
        } else {
            "redis-cluster"
        };
        let [first, second, third] = ports;
        format!("{scheme}://127.0.0.1:{first}?node=127.0.0.1:{second}&node=127.0.0.1:{third}")
    }

    /// The same over TLS only (`--port 0`, the cluster bus too), every master serving
    /// `cert`; its URL is `rediss-cluster://`.
    pub async fn start_tls(cert: &super::TestCert) -> RedisCluster {
        loop {
            let ports = [free_port(), free_port(), free_port()];
            if let Some(cluster) = RedisCluster::launch(Some(cert), ports).await {
                return cluster;
            }
        }
    }

    /// `redis-cli`, with what it needs to reach a TLS master.
    fn cli(&self) -> Command {
        let mut cli = Command::new("redis-cli");
        cli.args(self.tls_args());
        cli
    }

    fn tls_args(&self) -> Vec<String> {
        match &self.tls {
            Some(cert) => vec![
                "--tls".into(),
                "--cacert".into(),
                cert.display().to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// `redis-cli` arguments that reach the first master (TLS included).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = self.tls_args();
        args.extend(["-p".into(), self.port().to_string()]);
        args
    }

    /// How many keys match `pattern` over every master (`KEYS`: for tests only).
    pub async fn count_keys(&self, pattern: &str) -> usize {
        let mut n = 0;
        for node in &self.nodes {
            n += node.count_keys(pattern).await;
        }
        n
    }

    /// The shard channels each master holds subscriptions to (`PUBSUB SHARDCHANNELS`).
    pub async fn shard_channels(&self) -> Vec<Vec<String>> {
        let mut all = Vec::new();
        for n in &self.nodes {
            let out = self
                .cli()
                .args(["-p", &n.port.to_string(), "PUBSUB", "SHARDCHANNELS"])
                .output()
                .await
                .expect("redis-cli pubsub shardchannels");
            let text = String::from_utf8_lossy(&out.stdout);
            all.push(text.lines().map(str::to_owned).collect());
        }
        all
    }

    /// Three masters on `ports`, made a cluster; `None` if one exited before it listened
    /// (a port [`free_port`] handed out, or its bus port + 10000, was taken meanwhile by
    /// another test: the caller tries other ports).
    async fn launch(tls: Option<&super::TestCert>, ports: [u16; 3]) -> Option<RedisCluster> {
        let dir = std::env::temp_dir().join(format!(
            "pushwire-rc-{}-{}",
            std::process::id(),
            PROBE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let files = tls.map(|cert| cert.files());
        let mut nodes = Vec::new();
        for port in ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("cluster node dir");
            let mut flags: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]
            .map(String::from)
            .into();
            let mut listen = port;
            if let Some(files) = &files {
                let (cert, key) = (files.cert.display(), files.key.display());
                flags.extend(
                    [
                        ("--tls-port", port.to_string()),
                        ("--tls-cert-file", cert.to_string()),
                        ("--tls-key-file", key.to_string()),
                        ("--tls-ca-cert-file", cert.to_string()),
                        ("--tls-auth-clients", "no".into()),
                        ("--tls-cluster", "yes".into()),
                        // The bus would be on port + 10000, and port is 0 here.
                        ("--cluster-port", free_port().to_string()),
                    ]
                    .into_iter()
                    .flat_map(|(flag, value)| [flag.to_owned(), value]),
                );
                listen = 0;
            }
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let child = spawn_redis(listen, &node_dir, &flags);
            nodes.push(Redis { child, port });
        }
        let mut up = true;
        for n in &mut nodes {
            if !listening_or_exited(&mut n.child, n.port).await {
                up = false;
                break;
            }
        }
        if !up {
            drop(nodes);
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let cluster = RedisCluster {
            nodes,
            _dir: dir,
            tls: files.map(|f| f.cert),
        };
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = cluster
            .cli()
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
            let info = cluster
                .cli()
                .args(["-p", &cluster.port().to_string(), "cluster", "info"])
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
        Some(cluster)
    }

    /// The first master's port.
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`: the masters, as a client's seed list.
    pub fn seeds(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        addrs.join(",")
    }

    pub fn url(&self) -> String {
        let port = |i: usize| self.nodes[i].port;
        RedisCluster::url_of([port(0), port(1), port(2)], self.tls.is_some())
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

/// Waits until the redis-server `child` itself answers on `port` (`INFO server`'s
/// `process_id`); false once it has exited. A port [`free_port`] handed out may be taken
/// by another test's server before this one binds it, and then that one answers there:
/// two tests would share a Redis (and one test's node answer the other's pushes).
async fn serving(child: &mut Child, port: u16) -> bool {
    let pid = child.id();
    let deadline = Instant::now() + 3 * STEP;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let info = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "INFO", "server"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli");
        let answering = String::from_utf8_lossy(&info.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        if answering.is_some() && answering == pid {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `child` accepts connections on 127.0.0.1:`port` (true) or has exited
/// (false: it could not bind); 15 s at most, as [`wait_listening`].
async fn listening_or_exited(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + 3 * STEP;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    http_get(addr, "/readyz").await
}

/// `GET PATH` over a raw socket (`Connection: close`): the whole response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
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
