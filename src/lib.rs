//! pushwire: push lines from any backend to browsers over WebSocket.
#![forbid(unsafe_code)]

pub mod config;

pub use config::Config;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serve browsers on `ws` and backends on `push` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    ws: TcpListener,
    push: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = (config, ws, push);
    shutdown.cancelled().await;
    Ok(())
}
