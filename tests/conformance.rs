//! WebSocket conformance (issue 10): Autobahn|Testsuite's `fuzzingclient` against the real
//! `pushwire` binary, every case classified against the expectations below.
//!
//! `wstest` comes from `scripts/autobahn.sh` (which `scripts/test.sh` runs first): it is
//! `$AUTOBAHN_HOME/bin/wstest`, `/opt/autobahn/bin/wstest` by default. This test never
//! skips: without it, it fails and says how to install it.
//!
//! Two runs, side by side, one daemon each:
//! - **bound**: the daemon has `--jwt-secret` and Autobahn connects with `?token=` (a JWT for
//!   uid `autobahn`), so the connection is bound right after the handshake and every frame
//!   Autobahn sends goes through the bound session loop, where browsers spend their life.
//! - **pre-bind**: no secret, no token: the first text message Autobahn sends becomes the
//!   uid (or is refused), so the pre-bind reader and its own ping and close handling are
//!   tested too, and what follows a bind lands in the session loop.
//!
//! Autobahn expects an echo server; pushwire is push-only, so Autobahn's own verdict is
//! only taken as is where no echo is involved ([`Expect::Pass`], [`Expect::NonStrict`]).
//! Elsewhere the per-case report is checked against what pushwire must do instead: stay
//! quiet but answer pings and Autobahn's close ([`Expect::NoEcho`]), or fail the connection
//! with a given code ([`Expect::Fails`], [`Expect::Answers`]). The rules are in
//! [`BOUND`], [`PRE_BIND`] and [`COMMON`], with why each result is the right one.
//!
//! The expected differences from Autobahn's echo-server view, each written down at its
//! rule: no echo (push-only); the 4 KiB message limit (`--max-message-bytes`, so every
//! 9.* case and the 64 KiB ones of 1.* get 1009); the uid as first message (pre-bind:
//! empty 1008, binary 1003, too long 1008); UTF-8 checked per message, not per fragment
//! (6.4.*, NON-STRICT). Stricter than Autobahn: a 1-byte close payload must get 1002 and
//! codes >= 5000 must get 1002 (Autobahn also accepts no code, or calls it informational).
//!
//! Not run (see [`EXCLUDED`]): compression (12.*, 13.*) and the round-trip timings
//! (9.7.*, 9.8.*).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::process::Command;
use tokio::time::{Instant, timeout};

mod common;
use common::Daemon;

/// One whole Autobahn run takes about 70 s here, most of it Autobahn waiting 0.5-2 s for
/// an echo that never comes (about 90 cases); both runs go side by side. Past this
/// limit it is stuck (a server that stopped closing on oversized messages would make
/// the 9.* cases wait up to 100 s each).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// How many cases Autobahn|Testsuite 0.8.2 runs without [`EXCLUDED`].
const CASES: usize = 289;

/// Cases Autobahn does not run at all, and why.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "12.*",
        "permessage-deflate: pushwire negotiates no extension, so Autobahn marks each case \
         UNIMPLEMENTED right after the handshake (seen for 12.1.1 and 13.1.1); 216 cases \
         that would test nothing of ours",
    ),
    ("13.*", "permessage-deflate with parameters: as 12.*"),
    (
        "9.7.*",
        "round-trip timing: each message waits for the echo of the one before, so a server \
         that never echoes gets one small message and then a 60-480 s wait: 30 minutes \
         that measure nothing (a round trip is all these cases look at)",
    ),
    ("9.8.*", "as 9.7.*, with binary messages"),
];

/// What the server must do in one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Autobahn's own verdict is OK for the frames and for the close: no echo is involved,
    /// so its expectation is the RFC's and ours.
    Pass,
    /// Autobahn's verdict is NON-STRICT (an outcome it accepts as conforming), close OK.
    NonStrict,
    /// Autobahn wanted an echo; pushwire sends nothing back (push-only), which Autobahn
    /// calls FAILED. Checked instead: everything else Autobahn expected arrived (pongs, its
    /// own timeouts) and no message did; the server did not close, so Autobahn's own
    /// timer closed; the server answered that close with the same code; the close was clean.
    NoEcho,
    /// The server fails the connection with this code before Autobahn closes, no message
    /// arrives, and the close handshake completes cleanly.
    Fails(u16),
    /// Autobahn sends its close first; the server's close frame carries this code (not
    /// necessarily an echo of Autobahn's), cleanly, and no message arrives.
    Answers(u16),
}

use Expect::*;

/// A set of cases (`selects` syntax) and what they must do, with why.
struct Rule {
    cases: &'static str,
    expect: Expect,
    why: &'static str,
}

const fn rule(cases: &'static str, expect: Expect, why: &'static str) -> Rule {
    Rule { cases, expect, why }
}

/// Only in the bound state (a valid `?token=`): data messages are ignored; the 4 KiB limit.
const BOUND: &[Rule] = &[
    // 1.*: framing. Text and binary messages of 0..65536 bytes, in one frame or chopped.
    rule(
        "1.1.1..1.1.5 1.2.1..1.2.5",
        NoEcho,
        "no echo: a bound browser's messages (0-128 bytes, text or binary) are read and \
         ignored; the connection stays open",
    ),
    rule(
        "1.1.6..1.1.8 1.2.6..1.2.8",
        Fails(1009),
        "4 KiB limit: 65535-65536 bytes is over --max-message-bytes (4096), so 1009, as soon \
         as the frame header says so",
    ),
    // 7.1.6: 256 KiB text, then a small text, close and ping, back to back.
    rule(
        "7.1.6",
        Answers(1009),
        "4 KiB limit: Autobahn's close is already sent behind the 256 KiB message, but the \
         server stops at that message's header and closes with 1009 (Autobahn calls any \
         outcome INFORMATIONAL)",
    ),
    // 9.*: limits. 64 KiB-16 MiB messages, whole, fragmented into 64 B-4 MiB frames, or
    // written in 64 B-1 MiB chunks.
    rule(
        "9.*",
        Fails(1009),
        "4 KiB limit: every message here is 64 KiB or more, so 1009 once the first 4 KiB \
         (or the header that announces more) arrive; nothing beyond the limit is buffered",
    ),
    // 10.1.1: a 65536-byte text message that Autobahn fragments itself.
    rule(
        "10.1.1",
        Fails(1009),
        "4 KiB limit: 65536 bytes over 4096, so 1009",
    ),
];

/// Only in the pre-bind state: the first data message is the uid.
const PRE_BIND: &[Rule] = &[
    rule(
        "1.1.1 6.1.1 6.1.2",
        Fails(1008),
        "uid first: an empty first text message (whole or fragmented) is refused with 1008 \
         \"empty uid\"",
    ),
    rule(
        "1.1.2..1.1.5",
        NoEcho,
        "uid first, no echo: a 125-128 byte text message is a valid uid (at most \
         --max-uid-bytes, 256): the connection is bound and nothing comes back",
    ),
    rule(
        "1.2.1..1.2.5",
        Fails(1003),
        "uid first: a binary first message is refused with 1003 \"uid must be a text frame\"",
    ),
    rule(
        "1.1.6..1.1.8 1.2.6..1.2.8 9.* 10.1.1",
        Fails(1008),
        "uid first, 4 KiB limit: a first message over --max-message-bytes is refused with \
         1008 \"uid too long\" as soon as its header (or first 4 KiB) arrive; the reader \
         stops there, before the opcode matters, so binary ones get 1008 too",
    ),
    rule(
        "7.1.6",
        Answers(1008),
        "uid first, 4 KiB limit: the 256 KiB first message is a uid too long (1008); \
         Autobahn's close is already sent behind it but never read",
    ),
];

/// Both states.
const COMMON: &[Rule] = &[
    // 2.*: pings and pongs. A pong with the ping's payload for each ping, before and after
    // binding; 2.5 (a 126-byte ping payload) is a protocol error. Autobahn then closes
    // with 1000 and wants that answered (before binding too).
    rule(
        "2.*",
        Pass,
        "pings are answered with pongs carrying the same payload, a 126-byte ping fails \
         with 1002, and Autobahn's close is answered: no echo involved",
    ),
    // 3.*: reserved bits set (no extension was negotiated, so any RSV bit is an error).
    rule(
        "3.2..3.4",
        NonStrict,
        "1002 for the bad frame. Autobahn's strict outcome also wants the echo of the valid \
         message sent just before it; without echo its NON-STRICT alternative (1002, no \
         message) is the right one",
    ),
    rule("3.*", Pass, "any reserved bit set: 1002, no echo involved"),
    // 4.*: reserved opcodes 3-7 and 11-15.
    rule(
        "4.1.3..4.1.5 4.2.3..4.2.5",
        NonStrict,
        "1002 for the reserved opcode; NON-STRICT only because the valid message before it \
         is not echoed (see 3.2)",
    ),
    rule("4.*", Pass, "a reserved opcode: 1002, no echo involved"),
    // 5.*: fragmentation.
    rule(
        "5.3..5.8 5.19 5.20",
        NoEcho,
        "no echo: well-formed fragmented messages (with pings between the fragments in 5.6-5.8, \
         5.19 and 5.20) are reassembled and ignored; the pongs for the interleaved pings \
         arrive in order and are checked",
    ),
    rule(
        "5.15",
        NonStrict,
        "1002 for the stray continuation; NON-STRICT only because the valid message before \
         it is not echoed (see 3.2)",
    ),
    rule(
        "5.*",
        Pass,
        "fragmented control frames, continuations without a message and a new message inside \
         a fragmented one: 1002, no echo involved",
    ),
    // 6.*: UTF-8 in text messages (and in fragments of them).
    rule(
        "6.4.*",
        NonStrict,
        "1007, but only once the message is complete: UTF-8 is checked on the whole message \
         (at most 4 KiB is ever buffered), not fragment by fragment, which Autobahn calls \
         NON-STRICT (the RFC requires failing, not failing fast)",
    ),
    rule(
        "6.1.* 6.2.* 6.5.* 6.6.2 6.6.5 6.6.7 6.6.9 6.6.11 6.7.* 6.9.* 6.11.1..6.11.4 \
         6.22.* 6.23.*",
        NoEcho,
        "no echo: valid UTF-8 (empty, fragmented, every code point class and boundary, \
         noncharacters included) is accepted and ignored; the connection stays open",
    ),
    rule(
        "6.*",
        Pass,
        "invalid UTF-8 (bad sequences, overlongs, surrogates, code points above U+10FFFF, \
         truncated sequences): 1007, no echo involved",
    ),
    // 7.*: the closing handshake.
    rule(
        "7.1.1",
        NoEcho,
        "no echo: the text message before Autobahn's close is ignored, so Autobahn closes at \
         its timeout and the close is answered",
    ),
    rule(
        "7.3.2",
        Answers(1002),
        "a close payload of 1 byte cannot hold a code: protocol error, 1002 (RFC 6455 \
         §5.5.1); Autobahn accepts an empty answer too, we do not",
    ),
    rule(
        "7.5.1",
        Answers(1007),
        "a close reason that is not UTF-8 is invalid data: 1007 (RFC 6455 §5.5.1, §8.1)",
    ),
    rule(
        "7.9.* 7.13.*",
        Answers(1002),
        "close codes that must never be sent (0, 999, 1004-1006, 1016, 1100, 2000, 2999, \
         5000, 65535) are a protocol error: 1002, not an echo (RFC 6455 §7.4). Autobahn calls \
         7.13 (>= 5000) INFORMATIONAL; those are outside every range the RFC defines",
    ),
    rule(
        "7.*",
        Pass,
        "the close is answered, and frames after it are ignored (7.1.*); empty, code-only \
         and 123-byte-reason closes are echoed, a 126-byte close payload gets 1002 (7.3.*); \
         every valid code (1000-1003, 1007-1011, 3000-4999) is echoed back (7.7.*): no echo \
         of data involved",
    ),
];

/// True if `selector` (space-separated `A.B.C` ids, `A.B.*` prefixes and `A.B.C..A.B.D`
/// ranges over the last number) names the case `id`.
fn selects(selector: &str, id: &str) -> bool {
    selector.split_whitespace().any(|sel| {
        if let Some(prefix) = sel.strip_suffix('*') {
            id.starts_with(prefix)
        } else if let Some((from, to)) = sel.split_once("..") {
            let (Some((head, lo)), Some((head2, hi))) =
                (from.rsplit_once('.'), to.rsplit_once('.'))
            else {
                panic!("bad range {sel}");
            };
            assert_eq!(head, head2, "range {sel} spans two groups");
            let lo: u32 = lo.parse().unwrap();
            let hi: u32 = hi.parse().unwrap();
            id.rsplit_once('.').is_some_and(|(h, n)| {
                h == head && n.parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n))
            })
        } else {
            sel == id
        }
    })
}

/// The first rule of `rules` that names `id`, with its index.
fn lookup<'a>(rules: &[&'a Rule], id: &str) -> Option<(usize, &'a Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| selects(r.cases, id))
        .map(|(i, r)| (i, *r))
}

/// Autobahn's reports are Python's JSON, which escapes the lone surrogates of its invalid
/// UTF-8 payloads (`\udc80`); serde_json refuses those, so each becomes `\ufffd`. Pairs
/// and every other escape are kept as they are.
fn without_lone_surrogates(raw: &[u8]) -> Vec<u8> {
    fn unit(raw: &[u8], at: usize) -> Option<u16> {
        let hex = raw.get(at + 2..at + 6)?;
        (raw[at + 1] == b'u')
            .then(|| u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
            .flatten()
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        match unit(raw, i) {
            Some(0xD800..=0xDBFF)
                if raw.get(i + 6) == Some(&b'\\')
                    && matches!(unit(raw, i + 6), Some(0xDC00..=0xDFFF)) =>
            {
                out.extend_from_slice(&raw[i..i + 12]);
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                i += 6;
            }
            _ => {
                // Any other escape: copy it whole, so an escaped backslash is never
                // taken for the start of another escape.
                out.extend_from_slice(&raw[i..i + 2]);
                i += 2;
            }
        }
    }
    out
}

/// Reads one of Autobahn's JSON reports.
fn read_report(path: &Path) -> Value {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&without_lone_surrogates(&raw))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ---- Autobahn ----

/// Where `scripts/autobahn.sh` puts `wstest`.
fn wstest() -> PathBuf {
    let home = std::env::var_os("AUTOBAHN_HOME").unwrap_or_else(|| "/opt/autobahn".into());
    let path = Path::new(&home).join("bin/wstest");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/autobahn.sh (scripts/test.sh does) to install \
         Autobahn|Testsuite",
        path.display()
    );
    path
}

/// The facts of one case, from Autobahn's per-case report.
struct Case {
    behavior: String,
    behavior_close: String,
    closed_by_me: bool,
    was_clean: bool,
    /// Autobahn's own timer (kill or close after N seconds) fired: the server had not
    /// closed by then.
    timer_fired: bool,
    close_frames_in: u64,
    local_code: Option<u64>,
    remote_code: Option<u64>,
    remote_reason: Option<String>,
    received: Vec<Value>,
    /// Autobahn's expected events, per outcome (OK, NON-STRICT).
    expected: BTreeMap<String, Vec<Value>>,
    duration_ms: u64,
}

impl Case {
    fn parse(report: &Value) -> Case {
        let s = |k: &str| report[k].as_str().unwrap_or("").to_owned();
        let b = |k: &str| report[k].as_bool().unwrap_or(false);
        let wirelog = report["wirelog"].as_array().cloned().unwrap_or_default();
        let timer_fired = wirelog
            .iter()
            .any(|e| matches!(e[0].as_str(), Some("KLE") | Some("TIE")));
        let expected = report["expected"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        Case {
            behavior: s("behavior"),
            behavior_close: s("behaviorClose"),
            closed_by_me: b("closedByMe"),
            was_clean: b("wasClean"),
            timer_fired,
            close_frames_in: report["rxFrameStats"]["8"].as_u64().unwrap_or(0),
            local_code: report["localCloseCode"].as_u64(),
            remote_code: report["remoteCloseCode"].as_u64(),
            remote_reason: report["remoteCloseReason"].as_str().map(str::to_owned),
            received: report["received"].as_array().cloned().unwrap_or_default(),
            expected,
            duration_ms: report["duration"].as_u64().unwrap_or(0),
        }
    }

    fn messages_in(&self) -> usize {
        self.received
            .iter()
            .filter(|e| e[0].as_str() == Some("message"))
            .count()
    }

    /// Autobahn's expected events, messages left out: what a server that never echoes
    /// must produce (pongs, Autobahn's own timeout marks).
    fn expected_without_echo(&self) -> Vec<Vec<Value>> {
        self.expected
            .values()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e[0].as_str() != Some("message"))
                    .cloned()
                    .collect()
            })
            .collect()
    }

    /// What happened, in a line.
    fn describe(&self) -> String {
        let code = code_text;
        let events: Vec<String> = self
            .received
            .iter()
            .map(|e| {
                let what = e[0].as_str().unwrap_or("?");
                let payload = e[1].as_str().unwrap_or("");
                let short: String = payload.chars().take(24).collect();
                format!("{what}({short:?})")
            })
            .collect();
        format!(
            "Autobahn says {}/{}; {} closed first{}; server's close code {}{}, Autobahn's {}; \
             close frames received {}; clean {}; received [{}]; {} ms",
            self.behavior,
            self.behavior_close,
            if self.closed_by_me {
                "Autobahn"
            } else {
                "the server"
            },
            if self.timer_fired {
                " (at its timeout)"
            } else {
                ""
            },
            code(self.remote_code),
            self.remote_reason
                .as_deref()
                .map_or(String::new(), |r| format!(" {r:?}")),
            code(self.local_code),
            self.close_frames_in,
            self.was_clean,
            events.join(", "),
            self.duration_ms,
        )
    }

    /// `Err(why)` if the case did not do what `expect` says.
    fn check(&self, expect: Expect) -> Result<(), String> {
        let verdict = (self.behavior.as_str(), self.behavior_close.as_str());
        let no_messages = || match self.messages_in() {
            0 => Ok(()),
            n => Err(format!(
                "{n} message(s) came back; pushwire never sends one here"
            )),
        };
        let clean = || {
            if self.was_clean {
                Ok(())
            } else {
                Err("the closing handshake was not clean".to_owned())
            }
        };
        let code_is = |want: u16| {
            if self.close_frames_in == 0 {
                Err(format!("no close frame from the server (wanted {want})"))
            } else if self.remote_code != Some(u64::from(want)) {
                Err(format!(
                    "server's close code {}, wanted {want}",
                    code_text(self.remote_code)
                ))
            } else {
                Ok(())
            }
        };
        match expect {
            Pass if verdict == ("OK", "OK") => Ok(()),
            Pass => Err("Autobahn's verdict is not OK/OK".to_owned()),
            NonStrict if verdict == ("NON-STRICT", "OK") => Ok(()),
            NonStrict => Err("Autobahn's verdict is not NON-STRICT/OK".to_owned()),
            NoEcho => {
                no_messages()?;
                if !self.expected_without_echo().contains(&self.received) {
                    return Err(format!(
                        "received {:?}, wanted one of {:?}",
                        self.received,
                        self.expected_without_echo()
                    ));
                }
                if !self.closed_by_me || !self.timer_fired {
                    return Err("the server closed; it must stay open".to_owned());
                }
                if self.close_frames_in == 0 || self.remote_code != self.local_code {
                    return Err("the server did not answer Autobahn's close in kind".to_owned());
                }
                clean()
            }
            Fails(want) => {
                no_messages()?;
                if self.closed_by_me {
                    return Err(format!(
                        "Autobahn closed first; the server must fail with {want}"
                    ));
                }
                code_is(want)?;
                clean()
            }
            Answers(want) => {
                no_messages()?;
                if !self.closed_by_me {
                    return Err("the server closed before Autobahn did".to_owned());
                }
                code_is(want)?;
                clean()
            }
        }
    }
}

/// A close code as the report has it, or "none" (a close frame without one, or no frame).
fn code_text(code: Option<u64>) -> String {
    code.map_or("none".to_owned(), |c| c.to_string())
}

fn describe_expect(expect: Expect) -> String {
    match expect {
        Pass => "Autobahn's verdict OK/OK".to_owned(),
        NonStrict => "Autobahn's verdict NON-STRICT/OK".to_owned(),
        NoEcho => "no echo, no close by the server, Autobahn's close answered in kind".to_owned(),
        Fails(c) => format!("the server fails the connection with {c}, cleanly"),
        Answers(c) => format!("the server answers Autobahn's close with {c}, cleanly"),
    }
}

/// Runs every case against a fresh daemon started with `daemon_args`, connecting to
/// `path_and_query`, and checks each against `own` then [`COMMON`].
async fn conformance(state: &str, daemon_args: &[&str], path_and_query: &str, own: &[Rule]) {
    let wstest = wstest();
    // The real daemon on port 0 (the harness's launcher), killed when dropped.
    let daemon = Daemon::start(daemon_args).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("autobahn-{state}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let outdir = dir.join("reports");
    let agent = format!("pushwire-{state}");
    let spec = serde_json::json!({
        "outdir": outdir,
        "servers": [{"agent": agent, "url": format!("ws://{}{path_and_query}", daemon.ws_addr)}],
        "cases": ["*"],
        "exclude-cases": EXCLUDED.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        "exclude-agent-cases": {},
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let log_path = dir.join("wstest.log");
    let log = std::fs::File::create(&log_path).unwrap();

    let started = Instant::now();
    let mut child = Command::new(&wstest)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .current_dir(&dir)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", wstest.display()));
    let status = match timeout(RUN_LIMIT, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => panic!(
            "[{state}] wstest still running after {RUN_LIMIT:?}; its log: {}",
            log_path.display()
        ),
    };
    let took = started.elapsed();
    let wslog = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "[{state}] wstest failed ({status}):\n{wslog}"
    );

    let index_path = outdir.join("index.json");
    assert!(
        index_path.is_file(),
        "[{state}] no {}; wstest said:\n{wslog}",
        index_path.display()
    );
    let index = read_report(&index_path);
    let cases = index[&agent]
        .as_object()
        .unwrap_or_else(|| panic!("[{state}] no agent {agent} in {}", index_path.display()));

    let rules: Vec<&Rule> = own.iter().chain(COMMON).collect();
    let mut used = vec![0usize; rules.len()];
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut ids: Vec<&String> = cases.keys().collect();
    ids.sort_by_key(|id| {
        id.split('.')
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    for id in ids {
        let file = outdir.join(cases[id]["reportfile"].as_str().unwrap());
        let report = read_report(&file);
        let case = Case::parse(&report);
        let Some((i, rule)) = lookup(&rules, id) else {
            failures.push(format!(
                "{id}: no expectation for this case; actual: {}",
                case.describe()
            ));
            continue;
        };
        used[i] += 1;
        *counts.entry(format!("{:?}", rule.expect)).or_default() += 1;
        if let Err(why) = case.check(rule.expect) {
            failures.push(format!(
                "{id}: {why}\n    expected: {} ({})\n    actual:   {}",
                describe_expect(rule.expect),
                rule.why,
                case.describe()
            ));
        }
    }
    for (rule, n) in rules.iter().zip(&used) {
        if *n == 0 {
            failures.push(format!(
                "rule {:?} ({:?}) matched no case: Autobahn's case list changed?",
                rule.cases, rule.expect
            ));
        }
    }

    eprintln!(
        "[{state}] Autobahn|Testsuite: {} cases in {:.1} s against {}; by expectation: {counts:?}; \
         reports in {}",
        cases.len(),
        took.as_secs_f64(),
        daemon.ws_addr,
        outdir.display()
    );
    // Autobahn 0.8.2 runs 289 cases once 12.*, 13.*, 9.7.* and 9.8.* are left out: fewer
    // means part of the run went missing.
    if cases.len() != CASES {
        failures.push(format!("{} cases reported, {CASES} expected", cases.len()));
    }
    if !failures.is_empty() {
        let daemon_log = daemon.log();
        let tail: Vec<&str> = daemon_log.lines().rev().take(20).collect();
        panic!(
            "[{state}] {} of {} Autobahn cases did not do what pushwire must:\n{}\n\n\
             last daemon log lines:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        );
    }
}

/// Bound right after the handshake (`?token=`): every frame hits the session loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_bound_with_token() {
    let secret = "autobahn-conformance-secret";
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = pushwire::auth::Secret::new(secret).mint("autobahn", exp);
    conformance(
        "bound",
        &["--jwt-secret", secret],
        &format!("/?token={token}"),
        BOUND,
    )
    .await;
}

/// No token: the first text message Autobahn sends is the uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_pre_bind_uid_first() {
    conformance("pre-bind", &[], "/", PRE_BIND).await;
}

#[test]
fn selectors_and_report_fixups() {
    assert!(selects("1.1.1..1.1.5", "1.1.3"));
    assert!(!selects("1.1.1..1.1.5", "1.1.6"));
    assert!(!selects("1.1.1..1.1.5", "1.2.3"));
    assert!(selects("6.4.* 7.1.1", "6.4.10"));
    assert!(selects("6.4.* 7.1.1", "7.1.1"));
    assert!(!selects("6.4.* 7.1.1", "7.1.10"));
    assert!(!selects("6.4.*", "6.40.1"));
    assert!(selects("9.*", "9.6.6"));
    assert!(selects("5.3..5.8", "5.8"));
    let fixed = |s: &str| String::from_utf8(without_lone_surrogates(s.as_bytes())).unwrap();
    assert_eq!(fixed(r#""a\udc80b""#), r#""a\ufffdb""#);
    assert_eq!(fixed(r#""\ud83d\ude00""#), r#""\ud83d\ude00""#);
    assert_eq!(fixed(r#""\ud83d\n""#), r#""\ufffd\n""#);
    assert_eq!(fixed(r#""\\udc80""#), r#""\\udc80""#);
    assert_eq!(fixed(r#""\u00e9\\""#), r#""\u00e9\\""#);
    assert!(!selects("5.3..5.8", "5.18"));
}
