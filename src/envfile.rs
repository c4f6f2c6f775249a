//! The env file a reload re-reads (`--reload-env-file`; under the packaged unit, its copy of
//! `/etc/pushwire/pushwire.env`, which systemd's `EnvironmentFile=` also loads at start).
//!
//! Only the part of systemd's syntax that has one meaning is taken: `KEY=VALUE` lines,
//! blank lines and `#`/`;` comments, a value bare or in one pair of quotes. Anything else
//! (prose, `export`, `$(...)`, backticks, escapes, a quote left open, a line cut short)
//! is refused whole with its line and the reason, never guessed at: a file systemd reads
//! one way and the reload another is how a reload once opened the doors. The reason
//! never quotes a value (it may be a secret).

use std::fmt;
use std::io::Read;
use std::path::Path;

/// The largest env file read (1 MiB; the shipped one is ~12 KiB): a path pointing at
/// something else (a log, a device) is refused instead of read into memory.
pub const MAX_BYTES: u64 = 1024 * 1024;

/// One `KEY=VALUE` assignment and the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its line, for error messages.
    pub line: usize,
    /// The variable's name.
    pub key: String,
    /// The value, quotes removed.
    pub value: String,
}

/// A parsed env file: its assignments in file order (a key assigned twice keeps the
/// last, as for systemd).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    /// Every assignment, in order.
    pub entries: Vec<Entry>,
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Larger than [`MAX_BYTES`].
    TooLarge,
    /// Bytes that are not UTF-8 (or a NUL): not a text file.
    NotText,
    /// A carriage return: systemd drops it, a shell keeps it in the value.
    CarriageReturn,
    /// Neither blank, a comment nor `KEY=VALUE` with a valid name.
    NotAssignment,
    /// `export KEY=VALUE`: systemd ignores the whole line.
    Export,
    /// `$`, a backtick or `\` outside single quotes: a shell would substitute or unescape,
    /// systemd keeps or unescapes them, and this reader does neither.
    ShellSyntax(char),
    /// A quote that does not close the value, or text after a closing quote.
    UnbalancedQuote,
    /// ` #` in a value without quotes: systemd keeps it in the value, it is not a comment.
    InlineComment,
    /// The last line has no newline: the file was cut short or is being written.
    NoNewline,
    /// The file changed between two reads: it is being written.
    Changing,
    /// It could not be read.
    Io(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooLarge => write!(f, "larger than {MAX_BYTES} bytes: not an env file"),
            Problem::NotText => f.write_str("not text (a NUL byte or invalid UTF-8)"),
            Problem::CarriageReturn => {
                f.write_str("a carriage return (\\r): save the file with Unix line ends")
            }
            Problem::NotAssignment => f.write_str("not KEY=VALUE (comments start with # or ;)"),
            Problem::Export => f.write_str("shell syntax (export): write KEY=VALUE alone"),
            Problem::ShellSyntax(c) => write!(
                f,
                "shell syntax ({c:?} outside single quotes): nothing is substituted here; \
                 put a literal value in single quotes"
            ),
            Problem::UnbalancedQuote => f.write_str("unbalanced quote"),
            Problem::InlineComment => f.write_str(
                "a comment after the value: systemd keeps it in the value; put it on its own line",
            ),
            Problem::NoNewline => {
                f.write_str("no newline at the end: the file was cut short or is being written")
            }
            Problem::Changing => {
                f.write_str("it changed while being read: reload once it is written")
            }
            Problem::Io(e) => f.write_str(e),
        }
    }
}

/// A refusal: the problem and where (the line, and the key once it is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    /// The line (1-based), if one is at fault.
    pub line: Option<usize>,
    /// The key of that line, if it has one.
    pub key: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl EnvFileError {
    fn whole(problem: Problem) -> EnvFileError {
        EnvFileError {
            line: None,
            key: None,
            problem,
        }
    }

    fn at(line: usize, key: Option<&str>, problem: Problem) -> EnvFileError {
        EnvFileError {
            line: Some(line),
            key: key.map(str::to_owned),
            problem,
        }
    }
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, &self.key) {
            (Some(n), Some(key)) => write!(f, "line {n} ({key}): {}", self.problem),
            (Some(n), None) => write!(f, "line {n}: {}", self.problem),
            _ => self.problem.fmt(f),
        }
    }
}

impl std::error::Error for EnvFileError {}

/// Characters that only single quotes make literal: a shell substitutes `$...` and
/// backticks, systemd and the shell unescape `\\`.
const SHELL: &[char] = &['$', '`', '\\'];

/// Reads `path` into memory (at most [`MAX_BYTES`]) and parses it. It is read twice and
/// must read the same both times: a file being rewritten in place is refused rather than
/// parsed half old, half new.
pub fn read(path: &Path) -> Result<EnvFile, EnvFileError> {
    let mut first = read_bytes(path)?;
    for _ in 0..3 {
        let again = read_bytes(path)?;
        if again == first {
            return parse(&first);
        }
        first = again;
    }
    Err(EnvFileError::whole(Problem::Changing))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, EnvFileError> {
    let io = |e: std::io::Error| EnvFileError::whole(Problem::Io(e.to_string()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(EnvFileError::whole(Problem::TooLarge));
    }
    Ok(bytes)
}

/// Parses an env file (see the module's doc for what is taken).
pub fn parse(bytes: &[u8]) -> Result<EnvFile, EnvFileError> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(EnvFileError::whole(Problem::TooLarge));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(EnvFileError::at(line, None, Problem::NotText));
        }
    };
    let mut entries = Vec::new();
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        // The piece after the last newline (empty in a file that ends with one).
        let unterminated = lines.peek().is_none();
        if let Some(entry) = parse_line(i + 1, line, unterminated)? {
            entries.push(entry);
        }
    }
    Ok(EnvFile { entries })
}

fn parse_line(n: usize, line: &str, unterminated: bool) -> Result<Option<Entry>, EnvFileError> {
    if line.contains('\0') {
        return Err(EnvFileError::at(n, None, Problem::NotText));
    }
    if line.contains('\r') {
        return Err(EnvFileError::at(n, None, Problem::CarriageReturn));
    }
    let line = line.trim_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
        return Ok(None);
    }
    let (key, value) = match line.split_once('=') {
        Some((k, v)) => (k.trim_end_matches([' ', '\t']), v),
        None => ("", line),
    };
    let named = valid_name(key).then_some(key);
    if unterminated {
        return Err(EnvFileError::at(n, named, Problem::NoNewline));
    }
    if let Some(rest) = line.strip_prefix("export")
        && rest.starts_with([' ', '\t'])
    {
        return Err(EnvFileError::at(n, None, Problem::Export));
    }
    let Some(key) = named else {
        return Err(EnvFileError::at(n, None, Problem::NotAssignment));
    };
    let value = parse_value(value.trim_start_matches([' ', '\t']))
        .map_err(|p| EnvFileError::at(n, Some(key), p))?;
    Ok(Some(Entry {
        line: n,
        key: key.to_owned(),
        value,
    }))
}

/// A variable name: a letter or `_`, then letters, digits, `_`.
fn valid_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value after `=` (already trimmed on both sides): bare, `'literal'`, or `"plain"`.
fn parse_value(raw: &str) -> Result<String, Problem> {
    let quoted = |q: char| {
        let inner = raw
            .strip_prefix(q)
            .and_then(|r| r.strip_suffix(q))
            .filter(|inner| !inner.contains(q))
            .ok_or(Problem::UnbalancedQuote)?;
        Ok::<_, Problem>(inner)
    };
    if raw.starts_with('\'') {
        return quoted('\'').map(str::to_owned);
    }
    if raw.starts_with('"') {
        let inner = quoted('"')?;
        if let Some(c) = inner.chars().find(|c| SHELL.contains(c)) {
            return Err(Problem::ShellSyntax(c));
        }
        return Ok(inner.to_owned());
    }
    if raw.contains(['\'', '"']) {
        return Err(Problem::UnbalancedQuote);
    }
    if let Some(c) = raw.chars().find(|c| SHELL.contains(c)) {
        return Err(Problem::ShellSyntax(c));
    }
    if raw.contains(" #") || raw.contains("\t#") {
        return Err(Problem::InlineComment);
    }
    // Inner whitespace stays, as for systemd (`https://a.example, https://b.example`).
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .entries
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    fn refused(text: &str) -> String {
        parse(text.as_bytes())
            .map(|f| panic!("{text:?} was taken: {f:?}"))
            .unwrap_err()
            .to_string()
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn takes_assignments_comments_and_blank_lines() {
        assert_eq!(
            entries("# c\n; c\n\n  \nA=1\n  B = two \nC='x y $z'\nD=\"p q\"\nE=\n_F9=a=b\n"),
            [
                pair("A", "1"),
                pair("B", "two"),
                pair("C", "x y $z"),
                pair("D", "p q"),
                pair("E", ""),
                pair("_F9", "a=b"),
            ]
        );
    }

    #[test]
    fn an_empty_file_and_a_comment_without_newline_name_nothing() {
        assert_eq!(entries(""), []);
        assert_eq!(entries("\n\n"), []);
        assert_eq!(entries("# the end, no newline"), []);
        assert_eq!(entries("A=1\n   "), [pair("A", "1")]);
    }

    #[test]
    fn the_last_assignment_of_a_key_is_kept_in_order() {
        let file = parse(b"A=1\nB=2\nA=3\n").unwrap();
        let lines: Vec<_> = file.entries.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3]);
    }

    #[test]
    fn refuses_what_is_not_an_assignment() {
        assert_eq!(
            refused("This is pushwire's file.\n"),
            "line 1: not KEY=VALUE (comments start with # or ;)"
        );
        assert!(refused("A=1\nsee the README\n").starts_with("line 2: not KEY=VALUE"));
        assert!(refused("Note: x=y\n").starts_with("line 1: not KEY=VALUE"));
        assert!(refused("=value\n").starts_with("line 1: not KEY=VALUE"));
        assert!(refused("9A=1\n").starts_with("line 1: not KEY=VALUE"));
        assert!(refused("A-B=1\n").starts_with("line 1: not KEY=VALUE"));
        assert!(refused("[Service]\n").starts_with("line 1: not KEY=VALUE"));
    }

    #[test]
    fn refuses_shell_syntax() {
        assert_eq!(
            refused("export A=1\n"),
            "line 1: shell syntax (export): write KEY=VALUE alone"
        );
        assert!(refused("export\tA=1\n").contains("shell syntax (export)"));
        for (text, c) in [
            ("A=$(cat f)\n", '$'),
            ("A=`cat f`\n", '`'),
            ("A=${B}\n", '$'),
            ("A=$B\n", '$'),
            ("A=a\\\n", '\\'),
            ("A=\"$(cat f)\"\n", '$'),
            ("A=\"a\\b\"\n", '\\'),
        ] {
            let why = refused(text);
            assert!(
                why.starts_with("line 1 (A): shell syntax") && why.contains(&format!("{c:?}")),
                "{text:?}: {why}"
            );
        }
        // Single quotes keep every character as it is, for systemd and the shell alike.
        assert_eq!(entries("A='$(x)`y`\\;~'\n"), [pair("A", "$(x)`y`\\;~")]);
        // What systemd takes literally and means no substitution stays as written.
        assert_eq!(
            entries("A=redis-cluster://h:1?node=h:2&node=h:3\nB=a;b|c~!*\n"),
            [
                pair("A", "redis-cluster://h:1?node=h:2&node=h:3"),
                pair("B", "a;b|c~!*")
            ]
        );
    }

    #[test]
    fn refuses_unbalanced_quotes_and_inline_comments() {
        for text in [
            "A=\"x\n",
            "A='x\n",
            "A=x\"\n",
            "A='x'y\n",
            "A=\"x\"\"y\"\n",
            "A='\n",
            "A=it's\n",
        ] {
            assert_eq!(refused(text), "line 1 (A): unbalanced quote", "{text:?}");
        }
        assert!(refused("A=10.0.0.0/8 # office\n").starts_with("line 1 (A): a comment after"));
        // Inner spaces are part of the value, as for systemd; a `#` inside a word too.
        assert_eq!(
            entries("A=https://a.example, https://b.example\nB=x#y\n"),
            [
                pair("A", "https://a.example, https://b.example"),
                pair("B", "x#y")
            ]
        );
    }

    #[test]
    fn refuses_a_last_line_cut_short() {
        assert_eq!(
            refused("A=1\nPUSHWIRE_PUSH_ALLOW=10.0.0.0/8,192.168.0.0/1"),
            "line 2 (PUSHWIRE_PUSH_ALLOW): no newline at the end: the file was cut short or is being written"
        );
        assert!(refused("A=1\nPUSHWIRE_PUSH_SEC").starts_with("line 2: no newline"));
        assert!(refused("A=\"x").starts_with("line 1 (A): no newline"));
    }

    #[test]
    fn refuses_what_is_not_text() {
        assert_eq!(
            refused("A=1\r\n"),
            "line 1: a carriage return (\\r): save the file with Unix line ends"
        );
        assert!(refused("A=1\nB=\0\n").starts_with("line 2: not text"));
        assert_eq!(
            parse(b"A=1\nB=\xff\n").unwrap_err().to_string(),
            "line 2: not text (a NUL byte or invalid UTF-8)"
        );
        let big = vec![b'#'; MAX_BYTES as usize + 1];
        assert_eq!(parse(&big).unwrap_err().problem, Problem::TooLarge);
    }

    #[test]
    fn a_reason_never_quotes_the_value() {
        for text in [
            "A=hunter2 #x\n",
            "A=\"hunter2\n",
            "A=hunter2$\n",
            "A='hunter2",
            "A=hunter2\r\n",
        ] {
            let why = refused(text);
            assert!(!why.contains("hunter2"), "{text:?}: {why}");
        }
    }

    #[test]
    fn reads_a_file_once_whole() {
        let dir = std::env::temp_dir().join(format!("pushwire-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pushwire.env");
        std::fs::write(&path, "A=1\n").unwrap();
        assert_eq!(read(&path).unwrap().entries.len(), 1);
        std::fs::write(&path, vec![b'#'; MAX_BYTES as usize + 10]).unwrap();
        assert_eq!(read(&path).unwrap_err().problem, Problem::TooLarge);
        let missing = read(&dir.join("missing")).unwrap_err();
        assert!(matches!(missing.problem, Problem::Io(_)), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// How a generated value is written: bare, in single or in double quotes.
    fn written(value: &str, style: u8) -> String {
        let bare_ok = !value.contains(['\'', '"'])
            && !value.contains(SHELL)
            && !value.contains(" #")
            && !value.contains("\t#");
        match style % 3 {
            0 if bare_ok => value.to_owned(),
            1 if !value.contains('"') && !value.contains(SHELL) => format!("\"{value}\""),
            _ => format!("'{value}'"),
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_any_text(text in "[ -~\t\n\r]{0,300}") {
            let _ = parse(text.as_bytes());
        }

        /// Any assignments written in any of the three styles, between comments and
        /// blank lines, parse back to the same keys and values.
        #[test]
        fn valid_files_round_trip(
            lines in proptest::collection::vec(
                ("[A-Za-z_][A-Za-z0-9_]{0,20}", "[^'\n\r\0]{0,40}", any::<u8>(), 0u8..4),
                0..20,
            )
        ) {
            let mut text = String::new();
            let mut want = Vec::new();
            for (key, value, style, extra) in &lines {
                let value = value.trim_matches([' ', '\t']);
                match extra {
                    0 => text.push_str("# a comment = with $(things) 'in it\n"),
                    1 => text.push_str("\n  \t\n"),
                    _ => {}
                }
                let spaced = if *extra == 3 { " = " } else { "=" };
                text.push_str(&format!("{key}{spaced}{}\n", written(value, *style)));
                want.push((key.clone(), value.to_owned()));
            }
            let got: Vec<_> = parse(text.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?
                .entries
                .into_iter()
                .map(|e| (e.key, e.value))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
