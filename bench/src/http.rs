//! A minimal HTTP/1.1 client for publishers: requests written on one keep-alive
//! connection (pipelined when there are many), responses read in order. Only what the
//! doors answer is understood: a status line, headers, a body by `Content-Length` or
//! chunked.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;

/// Appends a `POST` of `body` to `target` (path and query) to `buf`.
pub fn post(buf: &mut Vec<u8>, host: &str, target: &str, content_type: &str, body: &[u8]) {
    buf.extend_from_slice(
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    buf.extend_from_slice(body);
}

/// Reads one response: its status and body.
pub async fn read_response(rd: &mut BufReader<OwnedReadHalf>) -> Result<(u16, Vec<u8>), String> {
    let mut line = String::new();
    let status_line = loop {
        line.clear();
        let n = rd
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading a response: {e}"))?;
        if n == 0 {
            return Err("the server closed the publisher connection".into());
        }
        if !line.trim().is_empty() {
            break line.trim_end().to_string();
        }
    };
    let mut parts = status_line.split(' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line {status_line:?}"))?,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        let n = rd
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading headers: {e}"))?;
        if n == 0 {
            return Err("connection closed inside the response headers".into());
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("bad header line {h:?}"));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                )
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            rd.read_line(&mut line)
                .await
                .map_err(|e| format!("reading a chunk: {e}"))?;
            let size_text = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text.trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    let n = rd
                        .read_line(&mut line)
                        .await
                        .map_err(|e| format!("reading trailers: {e}"))?;
                    if n == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            rd.read_exact(&mut body[start..])
                .await
                .map_err(|e| format!("reading a chunk: {e}"))?;
            body.truncate(start + size);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        rd.read_exact(&mut body)
            .await
            .map_err(|e| format!("reading a body: {e}"))?;
    } else if status >= 200 && status != 204 && status != 304 {
        return Err(format!(
            "status {status} without Content-Length or chunked body"
        ));
    }
    if close {
        return Err(format!(
            "the server closes the publisher connection (status {status}: {})",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok((status, body))
}
