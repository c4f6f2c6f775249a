//! Stranger-supplied text in log lines, made harmless: [`escaped`].
//!
//! Uids, group names, ids and reasons come from browsers and backends. Written raw into a
//! human log line, a `\n` forges a second line, a `\r` or a terminal escape (`\x1b[2K`)
//! rewrites the one on screen, and a NUL cuts it short for some readers. Every such field
//! goes through [`escaped`] (`warn!(uid = %escaped(uid), ...)`); the JSON log format
//! escapes on its own, so the two formats read the same. This module imports nothing
//! from the crate, so any module may use it.

use std::fmt;

/// Most bytes of the value written before it is cut, so one field cannot make a log line
/// megabytes long (the longest name the daemon accepts is far below this).
pub const MAX_LOGGED_BYTES: usize = 512;

/// `text` for a log field: control characters, quotes and backslashes escaped the way
/// Rust's `Debug` escapes them (`\n`, `\r`, `\0`, `\u{1b}`; also invisible format
/// characters such as U+202E), no surrounding quotes, cut after [`MAX_LOGGED_BYTES`] with
/// `...(N bytes)` saying how long it was. Printable text, non-ASCII included, is kept.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// The [`Display`](fmt::Display) of [`escaped`].
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut end = text.len().min(MAX_LOGGED_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        // Keeps printable characters, escapes the rest (combining marks only at the start,
        // where they would attach to the text before the field).
        fmt::Display::fmt(&text[..end].escape_debug(), f)?;
        if end < text.len() {
            write!(f, "...({} bytes)", text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_log_raw() {
        let nasty = "a\nforged line\r\u{1b}[31mred\u{0}\u{7f}\u{202e}é\"\\";
        let out = escaped(nasty).to_string();
        assert_eq!(out, r#"a\nforged line\r\u{1b}[31mred\0\u{7f}\u{202e}é\"\\"#);
        assert!(!out.chars().any(char::is_control));
        let long = "x".repeat(MAX_LOGGED_BYTES + 10);
        assert_eq!(
            escaped(&long).to_string(),
            format!("{}...({} bytes)", "x".repeat(MAX_LOGGED_BYTES), long.len())
        );
        // Cut on a char boundary.
        let wide = "é".repeat(MAX_LOGGED_BYTES);
        assert!(escaped(&wide).to_string().starts_with('é'));
    }
}
