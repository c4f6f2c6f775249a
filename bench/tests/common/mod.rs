//! What the load tool's tests share: the two binaries, the repository's scripts, free
//! ports.
//!
//! These tests only run programs (the daemon, the load tool, redis-server, the scripts),
//! so they need none of the daemon's in-process harness (`tests/common/` at the top, built
//! on the library and its dev-dependencies); the two helpers they used from it are here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// The load tool, built by cargo for these tests.
pub const BENCH: &str = env!("CARGO_BIN_EXE_pushwire-bench");

/// The repository's root (the daemon's package; `scripts/` lives there).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the repository")
}

/// `scripts/NAME` of the repository.
pub fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

/// The daemon's binary. A package's tests get only its own binaries from cargo, so the
/// daemon is found where cargo put it, next to the load tool in the shared target
/// directory: `cargo test --workspace` (scripts/test.sh) builds it for the daemon's own
/// tests before any test runs. Run alone, build it first:
/// `cargo build --bin pushwire && cargo test -p pushwire-bench --test NAME`.
pub fn daemon_bin() -> PathBuf {
    let bin = bin_dir().join("pushwire");
    assert!(
        bin.is_file(),
        "{} is missing: build the daemon first (`cargo build --bin pushwire`), or run \
         scripts/test.sh (`cargo test --workspace` builds both)",
        bin.display()
    );
    bin
}

/// The directory of both binaries, as the scripts want it (`BIN`, `PUSHWIRE_BIN_DIR`).
pub fn bin_dir() -> PathBuf {
    Path::new(BENCH)
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port` (15 s at most).
pub async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
