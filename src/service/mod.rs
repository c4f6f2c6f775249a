//! The backend service: one request in, one typed [`Reply`] out, the same for every door
//! (the TCP/Unix push port, `POST /push`). The doors do I/O and access checks; this does
//! routing, groups, presence, kicks and stats against the shared [`State`].
//!
//! # Answering now or later
//! [`handle`] returns a [`Response`], an [`Answer`]: `Now` when the reply is known at once
//! (everything on a single node but an ack wait: the fast path, synchronous), `Later`
//! when it must wait (cluster mode asks other nodes), `Barrier` when the connection's
//! next lines must wait for its effect. A door keeps replies in request order whatever
//! their kind: see [`Replies`].

mod fanout;
mod groups;
mod presence;
mod publish;
mod push;
mod replies;
pub mod reply;

use std::borrow::Cow;
use std::sync::Arc;

use tracing::debug;

pub use publish::publish;
pub use replies::Replies;
pub use reply::*;

use crate::logsafe::escaped;
use crate::metrics::Metric;
use crate::nodes::Answer;
use crate::state::State;
use crate::wire::command::{self, Command, CommandError, PushOptions};
use crate::wire::{BadLine, Frame, Payload, Uid, push_target_str};

/// What a request answers: a [`Reply`] now (every answer on a single node but an ack
/// wait), later, or once its effect has taken place (see [`Answer`]).
pub type Response = Answer<Reply>;

/// One backend request, parsed from a line. It owns what it delivers (each payload is a
/// [`Payload`] sharing the line's buffer), so running it needs nothing from the door.
#[derive(Debug)]
pub enum Request<'a> {
    /// A plain push line (the seed's protocol): the line itself goes to the uid's
    /// connections.
    Line {
        /// Who it is for.
        uid: Cow<'a, str>,
        /// The whole line, shared by every recipient.
        line: Payload,
    },
    /// A plain push line that is not valid.
    BadLine(BadLine),
    /// `/ping`.
    Ping,
    /// `/send TARGETS PAYLOAD`.
    Send {
        /// The uids.
        uids: Vec<Uid>,
        /// What they get.
        msg: Payload,
    },
    /// `/push ID [ttl=MS] [ack=MS] LINE`.
    Push {
        /// The retry key (with the line).
        id: Cow<'a, str>,
        /// `ttl=`, `ack=`.
        options: PushOptions,
        /// LINE, shared by every recipient.
        msg: Payload,
        /// LINE's uid, or why LINE is not a valid push line.
        target: Result<Cow<'a, str>, BadLine>,
    },
    /// `/group GROUP PAYLOAD`, `/group-except GROUP TARGETS PAYLOAD`.
    Group {
        /// The group.
        group: Cow<'a, str>,
        /// Members left out.
        except: Vec<Uid>,
        /// What the members get.
        msg: Payload,
    },
    /// `/broadcast PAYLOAD`, `/broadcast-except TARGETS PAYLOAD`.
    Broadcast {
        /// Uids left out.
        except: Vec<Uid>,
        /// What every connection gets.
        msg: Payload,
    },
    /// `/join GROUP TARGETS`.
    Join {
        /// The group.
        group: Cow<'a, str>,
        /// Who joins.
        uids: Vec<Uid>,
    },
    /// `/leave GROUP TARGETS`.
    Leave {
        /// The group.
        group: Cow<'a, str>,
        /// Who leaves.
        uids: Vec<Uid>,
    },
    /// `/members GROUP`.
    Members {
        /// The group.
        group: Cow<'a, str>,
    },
    /// `/online UID`.
    Online {
        /// The uid.
        uid: Cow<'a, str>,
    },
    /// `/count`.
    Count,
    /// `/uids [CURSOR [LIMIT]]`.
    Uids {
        /// Where the page starts.
        cursor: usize,
        /// How many at least.
        limit: usize,
    },
    /// `/kick TARGETS [REASON]`.
    Kick {
        /// The uids.
        uids: Vec<Uid>,
        /// Sent in the close frame.
        reason: Option<&'a str>,
    },
    /// `/stats`.
    Stats,
    /// A `/` line that does not parse.
    BadCommand(CommandError),
}

impl<'a> Request<'a> {
    /// Parses one framed line. `too_long_first` is the first byte of a line the framer
    /// discarded as too long: an over-long command gets a JSON error (which
    /// `json_decode(fgets($c), true)` can read), an over-long push the seed's `fail`.
    pub fn parse(frame: &'a Frame, too_long_first: Option<u8>, state: &State) -> Request<'a> {
        let bytes = match frame {
            Frame::TooLong if too_long_first == Some(b'/') => {
                return Request::BadCommand(CommandError::LineTooLong(state.config.max_line_bytes));
            }
            Frame::TooLong => return Request::BadLine(BadLine::TooLong),
            Frame::Line(bytes) => bytes,
        };
        let command = command::is_command(bytes);
        let Ok(text) = std::str::from_utf8(bytes) else {
            return if command {
                Request::BadCommand(CommandError::NotUtf8)
            } else {
                Request::BadLine(BadLine::NotUtf8)
            };
        };
        // The line was checked just above, so this never fails.
        let Some(line) = Payload::from_checked(bytes.clone(), text) else {
            return Request::BadLine(BadLine::NotUtf8);
        };
        if command {
            return match command::parse_with(text, &state.config.command_limits()) {
                Ok(command) => Request::of(command, &line, text)
                    .unwrap_or(Request::BadCommand(CommandError::PayloadOffset)),
                Err(err) => Request::BadCommand(err),
            };
        }
        match push_target_str(text) {
            Ok(uid) => Request::Line { uid, line },
            Err(bad) => Request::BadLine(bad),
        }
    }

    /// A parsed command, its payload offsets into `line` (whose text is `text`) made
    /// payloads. `None` for an offset off a character boundary: the grammar cuts at
    /// boundaries, so that would be a grammar bug, answered rather than a panic.
    fn of(command: Command<'a>, line: &Payload, text: &'a str) -> Option<Request<'a>> {
        Some(match command {
            Command::Ping => Request::Ping,
            Command::Send { uids, payload } => Request::Send {
                uids,
                msg: line.tail(payload)?,
            },
            Command::Push {
                id,
                line: at,
                options,
            } => Request::Push {
                id,
                options,
                msg: line.tail(at)?,
                target: push_target_str(text.get(at..)?),
            },
            Command::Group {
                group,
                except,
                payload,
            } => Request::Group {
                group,
                except,
                msg: line.tail(payload)?,
            },
            Command::Broadcast { except, payload } => Request::Broadcast {
                except,
                msg: line.tail(payload)?,
            },
            Command::Join { group, uids } => Request::Join { group, uids },
            Command::Leave { group, uids } => Request::Leave { group, uids },
            Command::Members { group } => Request::Members { group },
            Command::Online { uid } => Request::Online { uid },
            Command::Count => Request::Count,
            Command::Uids { cursor, limit } => Request::Uids { cursor, limit },
            Command::Kick { uids, reason } => Request::Kick { uids, reason },
            Command::Stats => Request::Stats,
        })
    }

    /// True for a `/` command (good or bad): counted in `commands`.
    fn is_command(&self) -> bool {
        !matches!(self, Request::Line { .. } | Request::BadLine(_))
    }
}

/// Parses and runs one line.
pub fn handle(state: &Arc<State>, frame: &Frame, too_long_first: Option<u8>) -> Response {
    execute(state, Request::parse(frame, too_long_first, state))
}

/// Runs one request: each kind is one function of its family, the same in both modes.
pub fn execute(state: &Arc<State>, request: Request<'_>) -> Response {
    if request.is_command() {
        state.metrics.incr(Metric::Commands);
    }
    match request {
        Request::Line { uid, line } => push::line(state, &uid, &line),
        Request::BadLine(bad) => push::bad_line(state, bad),
        Request::Ping => Answer::Now(Reply::Pong),
        Request::Send { uids, msg } => fanout::send(state, &uids, &msg),
        Request::Push {
            id,
            options,
            msg,
            target,
        } => push::tracked(state, id, options, msg, target),
        Request::Group { group, except, msg } => fanout::group(state, group, &except, &msg),
        Request::Broadcast { except, msg } => fanout::broadcast(state, &except, &msg),
        Request::Join { group, uids } => groups::join(state, group, &uids),
        Request::Leave { group, uids } => groups::leave(state, group, &uids),
        Request::Members { group } => groups::members(state, group),
        Request::Online { uid } => presence::online(state, uid.into_owned()),
        Request::Count => presence::count(state),
        Request::Uids { cursor, limit } => presence::uids(state, cursor, limit),
        Request::Kick { uids, reason } => presence::kick(state, &uids, reason),
        Request::Stats => presence::stats(state),
        Request::BadCommand(err) => {
            debug!(error = %escaped(&err.to_string()), "bad command");
            Answer::Now(Reply::error(err))
        }
    }
}
