//! Binding the daemon's listeners: TCP with an explicit backlog, the Unix push socket.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::{TcpListener, TcpSocket, UnixListener};

/// Binds the Unix push socket, replacing a stale file, with the given permissions.
pub fn listen_unix(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Binds with an explicit backlog: tokio's `bind` uses 128, and a connect storm past that
/// loses SYNs that then wait a full second for retransmission.
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    socket.listen(backlog)
}
