//! Push-port line framing: bytes in, lines out, never more than the limit held.

use bytes::{Buf, Bytes, BytesMut};

/// One unit read off the push port.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, terminator (`\n` or `\r\n`) removed.
    Line(Bytes),
    /// A line longer than the limit; its bytes were discarded as they arrived.
    TooLong,
}

/// Splits a byte stream into lines without ever holding more than `max` bytes of one line.
///
/// Unlike `LinesCodec`, an over-long line is not an error that ends the stream: it becomes a
/// [`Frame::TooLong`] once its terminator arrives, so the backend gets one `fail` for it and
/// the next line is handled normally.
#[derive(Debug)]
pub struct LineFramer {
    max: usize,
    /// Bytes at the front of the buffer already searched for `\n`.
    scanned: usize,
    /// Inside an over-long line: drop bytes until the next `\n`.
    discarding: bool,
    /// The first byte of the over-long line being (or last) discarded.
    too_long_first: Option<u8>,
}

impl LineFramer {
    /// A framer for lines of at most `max` bytes (terminator excluded).
    pub fn new(max: usize) -> Self {
        LineFramer {
            max,
            scanned: 0,
            discarding: false,
            too_long_first: None,
        }
    }

    /// The first byte of the line last returned as [`Frame::TooLong`], the one byte of it
    /// that is kept: `Some(b'/')` tells an over-long command from an over-long push, so
    /// each gets the reply its sender can parse.
    pub fn too_long_first_byte(&self) -> Option<u8> {
        self.too_long_first
    }

    /// Takes the next complete frame out of `buf`, if there is one.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(pos) => {
                let end = self.scanned + pos;
                self.scanned = 0;
                if self.discarding {
                    buf.advance(end + 1);
                    self.discarding = false;
                    return Some(Frame::TooLong);
                }
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                Some(self.finish_line(line))
            }
            None if self.discarding => {
                buf.clear();
                None
            }
            None => {
                // `max` content bytes plus a possible `\r` may legally wait for their `\n`.
                if buf.len() > self.max.saturating_add(1) {
                    self.too_long_first = buf.first().copied();
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                } else {
                    self.scanned = buf.len();
                }
                None
            }
        }
    }

    /// At end of input: the unterminated last line, if any, counts as a line.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) {
            buf.clear();
            return Some(Frame::TooLong);
        }
        if buf.is_empty() {
            return None;
        }
        let line = buf.split();
        Some(self.finish_line(line))
    }

    fn finish_line(&mut self, mut line: BytesMut) -> Frame {
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.max {
            self.too_long_first = line.first().copied();
            Frame::TooLong
        } else {
            Frame::Line(line.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, input: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(f) = framer.next_frame(&mut buf) {
                out.push(f);
            }
            assert!(buf.len() <= max + 2 + chunk.len());
        }
        out.extend(framer.finish(&mut buf));
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn an_over_long_line_keeps_its_first_byte() {
        let mut framer = LineFramer::new(4);
        let mut buf = BytesMut::from(&b"/join"[..]);
        assert_eq!(framer.next_frame(&mut buf), None);
        buf.extend_from_slice(b" room u1\n{\"uid\":1}\n");
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::TooLong));
        assert_eq!(framer.too_long_first_byte(), Some(b'/'));
        assert_eq!(framer.next_frame(&mut buf), Some(Frame::TooLong));
        assert_eq!(framer.too_long_first_byte(), Some(b'{'));
        buf.extend_from_slice(b"/pingpong");
        assert_eq!(framer.next_frame(&mut buf), None);
        assert_eq!(framer.finish(&mut buf), Some(Frame::TooLong));
        assert_eq!(framer.too_long_first_byte(), Some(b'/'));
    }

    #[test]
    fn splits_lines_across_chunks_and_strips_cr() {
        let got = frames(16, &[b"ab", b"c\r\nde\n\n", b"f"]);
        assert_eq!(got, vec![line("abc"), line("de"), line(""), line("f")]);
    }

    #[test]
    fn over_long_line_is_one_frame_and_next_line_survives() {
        let big = vec![b'x'; 100];
        let got = frames(8, &[&big, &big, b"\nok\n"]);
        assert_eq!(got, vec![Frame::TooLong, line("ok")]);
        // Exactly at the limit is fine, with or without \r.
        assert_eq!(frames(3, &[b"abc\r\n"]), vec![line("abc")]);
        assert_eq!(frames(3, &[b"abcd\n"]), vec![Frame::TooLong]);
        assert_eq!(frames(3, &[b"abcd"]), vec![Frame::TooLong]);
    }
}
