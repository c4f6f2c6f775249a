//! A `redis-server` in a network namespace of its own, reached from the test's namespace
//! over veth links that a test cuts and restores (`ip link set … down` / `up`): a real
//! network partition between one node and Redis, while that node, its browsers and its
//! backends (all on 127.0.0.1 in the test's namespace) stay connected, and other nodes
//! keep their own link.
//!
//! Cutting sets the link's far end (inside the namespace) down: the near end loses its
//! carrier, so packets to Redis are dropped without an error, as in a partition (no
//! reset, no ICMP: a connect hangs, a connection's unanswered data is retransmitted).
//!
//! Needs root (CAP_NET_ADMIN) and iproute2 (`scripts/test.sh` installs it). Names are
//! unique per test: a namespace `pwtN` is claimed by creating it (the kernel refuses a
//! taken name), and its links and addresses derive from N, so tests running at once (in
//! one binary or several) never share one. Everything is removed on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::STEP;

/// Namespaces the harness may claim (`pwt0` ..); 4 links of a /30 each per namespace,
/// in 10.200.0.0/14.
const SLOTS: u32 = 1 << 14;
/// Links per namespace at most.
const MAX_LINKS: usize = 4;
/// Redis's port inside its namespace (its own: nothing else listens there).
const PORT: u16 = 6379;

/// A redis-server alone in a network namespace, reached over `links` veth pairs.
pub struct NetRedis {
    ns: String,
    slot: u32,
    links: usize,
    redis: Option<Child>,
}

impl NetRedis {
    /// A namespace with `links` links (1 ..= 4) to this one, and Redis listening on every
    /// link's far address.
    pub async fn start(links: usize) -> NetRedis {
        assert!((1..=MAX_LINKS).contains(&links), "1 to {MAX_LINKS} links");
        let first = std::process::id().wrapping_mul(7919) % SLOTS;
        let slot = (0..SLOTS)
            .map(|i| (first + i) % SLOTS)
            .find(|&slot| match ip(&["netns", "add", &format!("pwt{slot}")]) {
                Ok(()) => true,
                Err(e) if e.contains("exists") => false,
                Err(e) => panic!("ip netns add (root and iproute2 needed): {e}"),
            })
            .expect("a free network namespace name (pwt0..)");
        let mut net = NetRedis {
            ns: format!("pwt{slot}"),
            slot,
            links,
            redis: None,
        };
        ip(&["-n", &net.ns, "link", "set", "lo", "up"]).expect("lo up");
        for link in 0..links {
            let (near, far) = (net.near_name(link), net.far_name(link));
            let (near_ip, far_ip) = (net.near_ip(link), net.far_ip(link));
            let steps: [&[&str]; 5] = [
                &[
                    "link", "add", &near, "type", "veth", "peer", "name", &far, "netns", &net.ns,
                ],
                &["addr", "add", &format!("{near_ip}/30"), "dev", &near],
                &["link", "set", &near, "up"],
                &[
                    "-n",
                    &net.ns,
                    "addr",
                    "add",
                    &format!("{far_ip}/30"),
                    "dev",
                    &far,
                ],
                &["-n", &net.ns, "link", "set", &far, "up"],
            ];
            for step in steps {
                ip(step).unwrap_or_else(|e| panic!("ip {step:?}: {e}"));
            }
        }
        net.redis = Some(net.spawn_redis().await);
        net
    }

    fn near_name(&self, link: usize) -> String {
        format!("pwt{}l{link}a", self.slot)
    }

    fn far_name(&self, link: usize) -> String {
        format!("pwt{}l{link}b", self.slot)
    }

    /// 10.(200 + slot / 4096).(slot / 16 % 256).(slot % 16 * 16 + link * 4) is the /30.
    fn subnet(&self, link: usize) -> [u8; 4] {
        let s = self.slot;
        [
            10,
            200 + (s >> 12) as u8,
            ((s >> 4) & 0xff) as u8,
            (((s & 15) << 4) as u8) | ((link as u8) << 2),
        ]
    }

    fn near_ip(&self, link: usize) -> String {
        let [a, b, c, d] = self.subnet(link);
        format!("{a}.{b}.{c}.{}", d + 1)
    }

    /// Redis's address on `link`.
    pub fn far_ip(&self, link: usize) -> String {
        let [a, b, c, d] = self.subnet(link);
        format!("{a}.{b}.{c}.{}", d + 2)
    }

    /// `redis://ADDR:6379/` over `link`.
    pub fn url(&self, link: usize) -> String {
        format!("redis://{}:{PORT}/", self.far_ip(link))
    }

    /// `redis-cli` arguments that reach Redis over `link`.
    pub fn cli_args(&self, link: usize) -> Vec<String> {
        vec![
            "-h".into(),
            self.far_ip(link),
            "-p".into(),
            PORT.to_string(),
        ]
    }

    /// The redis-server's pid (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.redis
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server running")
    }

    /// Cuts `link`: packets over it are dropped silently until [`NetRedis::restore`].
    pub fn cut(&self, link: usize) {
        ip(&["-n", &self.ns, "link", "set", &self.far_name(link), "down"]).expect("link down");
    }

    /// Brings `link` back.
    pub fn restore(&self, link: usize) {
        ip(&["-n", &self.ns, "link", "set", &self.far_name(link), "up"]).expect("link up");
    }

    /// Kills Redis (SIGKILL) and starts a new one in its place, with none of the old one's
    /// data (no persistence), once it answers.
    pub async fn restart_empty(&mut self) {
        if let Some(mut old) = self.redis.take() {
            let _ = old.kill().await;
        }
        self.redis = Some(self.spawn_redis().await);
    }

    /// `redis-server` in the namespace (`ip netns exec` execs it: its pid is the server's),
    /// returned once it answers on every link.
    async fn spawn_redis(&self) -> Child {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "redis-server"])
            .args(["--port", &PORT.to_string(), "--bind", "0.0.0.0"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server in a namespace (scripts/test.sh installs both)");
        let deadline = Instant::now() + STEP;
        for link in 0..self.links {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("redis-server in {} exited: {status}", self.ns);
                }
                let pong = Command::new("redis-cli")
                    .args(self.cli_args(link))
                    .arg("PING")
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .expect("run redis-cli");
                if String::from_utf8_lossy(&pong.stdout).trim() == "PONG" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "redis-server in {} did not answer on {}",
                    self.ns,
                    self.far_ip(link)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        child
    }
}

impl Drop for NetRedis {
    fn drop(&mut self) {
        if let Some(redis) = &mut self.redis {
            let _ = redis.start_kill();
        }
        // Deleting the namespace deletes the far ends, and with them the pairs.
        for link in 0..self.links {
            let _ = ip(&["link", "del", &self.near_name(link)]);
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Runs `ip ARGS`; its stderr if it failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip (iproute2; scripts/test.sh installs it): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
