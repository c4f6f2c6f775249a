//! A lean receive side for the bench's WebSocket clients. The handshake and the uid frame go
//! through tungstenite; after that each client only reads server frames, which this parses
//! straight from a small per-client buffer (no zero-filled 4 KiB read buffer, no allocation
//! per message), so ~19k clients stay cheap in memory and CPU next to the server on 2 cores.
//! It is strict: masked or reserved-bit frames, binary frames, bad UTF-8 or a continuation
//! out of place are errors. Pings are answered with masked pongs.

/// Largest message accepted (the bench only ever expects small frames).
const MAX_MESSAGE: usize = 16 << 20;

#[derive(Default)]
pub struct FrameReader {
    pub buf: Vec<u8>,
    frag: Option<Vec<u8>>,
    /// Bytes needed to complete the frame at the head of `buf` (0 = unknown).
    pub need: usize,
}

/// What ended the connection, when a close frame arrived.
pub type CloseDesc = String;

impl FrameReader {
    /// Reads what `s` has into the buffer, grown for the frame in progress; `Err`: why
    /// the connection ended.
    pub async fn read_from<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
    ) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        let spare = self.buf.capacity() - self.buf.len();
        if spare < 256 || spare < self.need {
            self.buf.reserve(self.need.max(1024));
        }
        match s.read_buf(&mut self.buf).await {
            Ok(0) => Err("connection ended".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read error: {e}")),
        }
    }

    /// Handles every complete frame in the buffer: text frames go to `on_text`, ping payloads
    /// are pushed to `pongs`. Returns `Ok(Some(_))` once a close frame was read.
    pub fn process(
        &mut self,
        mut on_text: impl FnMut(&str),
        pongs: &mut Vec<Vec<u8>>,
    ) -> Result<Option<CloseDesc>, String> {
        let mut pos = 0;
        let buf = &self.buf;
        let frag = &mut self.frag;
        self.need = 0;
        let res = loop {
            let b = &buf[pos..];
            if b.len() < 2 {
                break Ok(None);
            }
            let (fin, op) = (b[0] & 0x80 != 0, b[0] & 0x0f);
            if b[0] & 0x70 != 0 {
                break Err(format!("reserved bits set (first byte {:#04x})", b[0]));
            }
            if b[1] & 0x80 != 0 {
                break Err("masked frame from the server".into());
            }
            let (len, hl) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
                127 if b.len() >= 10 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(a), 10)
                }
                126 | 127 => break Ok(None),
                l => (u64::from(l), 2),
            };
            if len > MAX_MESSAGE as u64 {
                break Err(format!("frame of {len} bytes"));
            }
            let total = hl + len as usize;
            if b.len() < total {
                self.need = total - b.len();
                break Ok(None);
            }
            let payload = &b[hl..total];
            pos += total;
            match op {
                0x1 if frag.is_some() => break Err("text frame inside a fragmented message".into()),
                0x1 if fin => match std::str::from_utf8(payload) {
                    Ok(t) => on_text(t),
                    Err(_) => break Err("text frame is not UTF-8".into()),
                },
                0x1 => *frag = Some(payload.to_vec()),
                0x0 => {
                    let Some(f) = frag.as_mut() else {
                        break Err("continuation frame without a message".into());
                    };
                    f.extend_from_slice(payload);
                    if f.len() > MAX_MESSAGE {
                        break Err("fragmented message too large".into());
                    }
                    if fin {
                        let f = frag.take().unwrap_or_default();
                        match std::str::from_utf8(&f) {
                            Ok(t) => on_text(t),
                            Err(_) => break Err("text message is not UTF-8".into()),
                        }
                    }
                }
                0x2 => break Err("binary frame".into()),
                0x8 => {
                    let desc = if payload.len() >= 2 {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        format!(
                            "closed by server: {code} {:?}",
                            String::from_utf8_lossy(&payload[2..])
                        )
                    } else {
                        "closed by server (no status)".to_string()
                    };
                    break Ok(Some(desc));
                }
                0x9 if fin && payload.len() <= 125 => pongs.push(payload.to_vec()),
                0xA if fin && payload.len() <= 125 => {}
                _ => {
                    break Err(format!(
                        "bad frame (opcode {op:#x}, fin {fin}, {len} bytes)"
                    ));
                }
            }
        };
        self.buf.drain(..pos);
        res
    }
}

/// A masked client frame (control frames only: payload ≤ 125 bytes).
pub fn masked_frame(op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let len = payload.len().min(125);
    let mut f = Vec::with_capacity(6 + len);
    f.push(0x80 | op);
    f.push(0x80 | len as u8);
    f.extend_from_slice(&key);
    f.extend(
        payload[..len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4]),
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            l if l < 126 => f.push(l as u8),
            l if l < 65536 => {
                f.push(126);
                f.extend_from_slice(&(l as u16).to_be_bytes());
            }
            l => {
                f.push(127);
                f.extend_from_slice(&(l as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    type Outcome = (Vec<String>, Vec<Vec<u8>>, Result<Option<String>, String>);

    fn run(r: &mut FrameReader) -> Outcome {
        let mut texts = Vec::new();
        let mut pongs = Vec::new();
        let res = r.process(|t| texts.push(t.to_string()), &mut pongs);
        (texts, pongs, res)
    }

    #[test]
    fn texts_pings_and_partial_frames() {
        let big = "y".repeat(70_000);
        let mut bytes = frame(0x81, b"hello");
        bytes.extend(frame(0x89, b"pp"));
        bytes.extend(frame(0x81, b"x".repeat(300).as_slice()));
        bytes.extend(frame(0x81, big.as_bytes()));
        bytes.extend(frame(0x01, b"ab"));
        bytes.extend(frame(0x80, b"cd"));
        let mut r = FrameReader::default();
        let mut texts = Vec::new();
        // Feed byte by byte: every split point must work.
        for b in &bytes {
            r.buf.push(*b);
            let (t, _, res) = run(&mut r);
            assert_eq!(res, Ok(None));
            texts.extend(t);
        }
        assert_eq!(
            texts,
            vec![
                "hello".to_string(),
                "x".repeat(300),
                big,
                "abcd".to_string()
            ]
        );
        r.buf.extend(frame(0x89, b"zz"));
        let (_, pongs, _) = run(&mut r);
        assert_eq!(pongs, vec![b"zz".to_vec()]);
        assert!(r.buf.is_empty());
    }

    #[test]
    fn close_and_errors() {
        let mut r = FrameReader::default();
        r.buf.extend(frame(0x88, &[0x03, 0xe9, b'b', b'y']));
        assert_eq!(
            run(&mut r).2,
            Ok(Some("closed by server: 1001 \"by\"".into()))
        );
        for bad in [
            frame(0x82, b"bin"),
            frame(0xC1, b"rsv"),
            frame(0x80, b"cont"),
            vec![0x81, 0x81, 0, 0, 0, 0, b'a'],
        ] {
            let mut r = FrameReader::default();
            r.buf.extend(bad);
            assert!(run(&mut r).2.is_err());
        }
        let mut r = FrameReader::default();
        r.buf.extend(frame(0x81, &[0xff, 0xfe]));
        assert!(run(&mut r).2.is_err());
    }

    #[test]
    fn masked_pong() {
        let f = masked_frame(0xA, b"abc", [1, 2, 3, 4]);
        assert_eq!(
            f,
            vec![0x8A, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]
        );
    }
}
