//! `pushwire check-config`: what the daemon would refuse or warn about at start, found
//! without starting it (nothing is served, nothing is left bound, Redis is not contacted).

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use pushwire::reload::{SecretSource, Setting};

use crate::cli::args::Args;
use crate::cli::listen::listen;
use crate::cli::settings::{
    exposed_doors, http_addr, pusher_apps, raise_nofile, reloader, unvalidated_config,
    ws_overcommit,
};

/// The URL schemes `--redis` may use (fred's, and the ones tested).
const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis-cluster", "rediss-cluster"];

/// A Unix socket's path must fit `sun_path` (108 bytes with its terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// Whether the command line asks for `check-config`: looked at before clap parses it,
/// so that a value clap refuses is still reported the check-config way.
pub fn requested() -> bool {
    std::env::args_os().skip(1).any(|a| a == "check-config")
}

/// Clap refused the flags or the environment. It stops at its first refusal, so every
/// `PUSHWIRE_*` variable is also parsed on its own (unless its flag is on the command
/// line, which wins): one line for each value the daemon could not start with.
pub fn unparsable(err: &clap::Error) -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let on_command_line = |long: &str| {
        let flag = format!("--{long}");
        argv.iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
    };
    // The same flags with no environment behind them, to parse one value at a time.
    let bare = Args::command().mut_args(|a| a.env(None::<&'static str>));
    let mut problems = Vec::new();
    for arg in Args::command().get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = std::env::var_os(env) else {
            continue;
        };
        if on_command_line(long) {
            continue;
        }
        let mut flag = OsString::from(format!("--{long}="));
        flag.push(&value);
        let alone = [OsString::from("pushwire"), flag, "check-config".into()];
        if let Err(e) = bare.clone().try_get_matches_from(alone) {
            problems.push(format!("{}: {}", env.to_string_lossy(), one_line(&e)));
        }
    }
    let first = one_line(err);
    if !problems.iter().any(|p| p.ends_with(&first)) {
        problems.insert(0, first);
    }
    report(&problems, &[])
}

/// Everything the daemon checks at start, short of serving.
pub fn run(args: &Args, pinned: &[Setting], bind: bool) -> ExitCode {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    // The same limit the daemon would run with (under systemd: the unit's LimitNOFILE).
    let (nofile, err) = raise_nofile();
    if let Some(err) = err {
        warnings.push(format!("cannot raise the open-files limit: {err}"));
    }

    let mut secret_of = |long: &str, file: Option<&Path>, literal: &Option<String>| {
        if literal.as_deref() == Some("") {
            let literal = long.strip_suffix("-file").unwrap_or(long);
            warnings.push(format!("{} is empty: no secret is set", label(literal)));
        }
        match SecretSource::given(file, literal.as_deref()).read() {
            Ok(s) => Ok(s),
            Err(e) => {
                problems.push(format!("{}: {e}", label(long)));
                Err(())
            }
        }
    };
    let jwt = secret_of(
        "jwt-secret-file",
        args.jwt_secret_file.as_deref(),
        &args.jwt_secret,
    );
    let push = secret_of(
        "push-secret-file",
        args.push_secret_file.as_deref(),
        &args.push_secret,
    );
    let events = secret_of(
        "events-secret-file",
        args.events_secret_file.as_deref(),
        &args.events_secret,
    );
    let secrets_known = jwt.is_ok() && push.is_ok();
    if let Err(e) = pusher_apps(args) {
        problems.push(e);
    }
    let mut config = unvalidated_config(
        args,
        jwt.unwrap_or_default(),
        push.unwrap_or_default(),
        nofile,
    );
    if let Ok(secret) = events {
        config.events_secret = secret;
        if let Err(e) = config.events.check(config.events_secret.as_ref()) {
            problems.push(format!("{}: {e}", label("events-url")));
        }
    }
    if let Some((requested, capacity)) = ws_overcommit(args, &config, nofile) {
        warnings.push(format!(
            "{} {requested} exceeds what the open-files limit ({nofile}) allows: {capacity}",
            label("max-ws-connections")
        ));
    }
    let (config, notes) = config.validate();
    warnings.extend(notes);
    // Without the secret a failed file would have given, "open to all" is not known.
    if secrets_known {
        for (door, addr) in exposed_doors(args, &config) {
            warnings.push(format!(
                "{door} {addr} is not on loopback: anyone who can reach it can push to any user"
            ));
        }
    }

    let push_plain = config
        .push_secret
        .as_ref()
        .map(|s| String::from_utf8_lossy(s.reveal()).into_owned());
    if let Err(e) = args.gateway.config(push_plain.as_deref()) {
        problems.push(e);
    }
    match args.queue.config(config.redis.as_deref()) {
        Err(e) => problems.push(e),
        Ok(Some(q)) => {
            if let Err(e) = redis_url(&q.url) {
                problems.push(format!(
                    "{} {}: {e}",
                    label("redis-queue-url"),
                    redacted(&q.url)
                ));
            }
        }
        Ok(None) => {}
    }
    if let Some(url) = &config.redis
        && let Err(e) = redis_url(url)
    {
        problems.push(format!("{} {}: {e}", label("redis"), redacted(url)));
    }

    if let Some(files) = &config.tls
        && let Err(e) = pushwire::tls::load(files)
    {
        problems.push(format!("{}: {e}", label("tls-cert")));
    }

    // What the next reload would apply must be good now: the same reading of the
    // file, refused for the same reasons. (Its secret files are read only when the
    // ones in use were: a bad one is reported once, above.)
    if args.reload_env_file.is_some() {
        let next = reloader(args, pinned.to_vec()).next();
        let applied = next.and_then(|next| {
            if secrets_known {
                next.sources.resolve()?;
            }
            next.sources.tls().map(drop)
        });
        if let Err(e) = applied {
            problems.push(format!("{}: {e}", label("reload-env-file")));
        }
    }

    if let Some(path) = &args.push_unix
        && let Err(e) = unix_socket_path(path)
    {
        problems.push(format!("{} {}: {e}", label("push-unix"), path.display()));
    }

    if bind {
        bind_all(args, &mut problems);
    }

    report(&problems, &warnings)
}

/// Binds every listener as the daemon would (same options, same backlog), all at once
/// so that two flags naming one address collide here too, then releases them.
fn bind_all(args: &Args, problems: &mut Vec<String>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return problems.push(format!("cannot start a runtime to bind with: {e}")),
    };
    let _entered = rt.enter();
    let mut held = Vec::new();
    for (long, addr) in [
        ("ws-listen", Some(args.ws_listen)),
        ("push-listen", Some(args.push_listen)),
        ("http-listen", http_addr(args.http_listen)),
        ("gateway-listen", http_addr(args.gateway.gateway_listen)),
        (
            "gateway-register-listen",
            http_addr(args.gateway.gateway_listen).map(|_| args.gateway.gateway_register_listen),
        ),
        (
            "gateway-ws-listen",
            http_addr(args.gateway.gateway_ws_listen),
        ),
    ] {
        let Some(addr) = addr else { continue };
        match listen(addr, args.listen_backlog) {
            Ok(l) => held.push(l),
            Err(e) => problems.push(format!("{}: {e}", label(long))),
        }
    }
}

/// Warnings, then `config ok` on stdout (exit 0) or each problem on stderr (exit 1).
fn report(problems: &[String], warnings: &[String]) -> ExitCode {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if problems.is_empty() {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    for p in problems {
        eprintln!("error: {p}");
    }
    ExitCode::FAILURE
}

/// `--flag (PUSHWIRE_FLAG)`: both names, since the value may come from either.
fn label(long: &str) -> String {
    let cmd = Args::command();
    let env = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(OsStr::to_string_lossy);
    match env {
        Some(env) => format!("--{long} ({env})"),
        None => format!("--{long}"),
    }
}

/// A clap error's first line, without its `error: ` prefix.
fn one_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The daemon hands `--redis` to fred as is; fred also takes schemes nobody means here
/// (`http://` parses as a standalone Redis), so the scheme is checked first.
fn redis_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !scheme.is_some_and(|s| REDIS_SCHEMES.contains(&s)) {
        return Err(format!(
            "not a Redis URL (want {})",
            REDIS_SCHEMES.map(|s| format!("{s}://")).join(", ")
        ));
    }
    fred::types::config::Config::from_url(url)
        .map(drop)
        .map_err(|e| e.details().to_string())
}

/// The URL without its user and password (a `user:password@` part), for printing.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() + 3 => {
            format!("{scheme}://***@{}", &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The daemon binds `path` (replacing a stale socket file): its directory must exist
/// and take a new socket, and the path must not be another kind of file.
fn unix_socket_path(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    if path.as_os_str().len() > SUN_PATH_MAX {
        return Err(format!(
            "longer than the {SUN_PATH_MAX} bytes a socket path may have"
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("directory {}: {e}", dir.display())),
    }
    if let Ok(m) = std::fs::symlink_metadata(path)
        && !m.file_type().is_socket()
    {
        return Err("exists and is not a socket".to_owned());
    }
    // A socket of our own next to it shows the directory takes one (permissions,
    // a read-only mount); it is removed at once.
    let probe = dir.join(format!(".pushwire-check-{}", std::process::id()));
    if probe.as_os_str().len() <= SUN_PATH_MAX {
        std::os::unix::net::UnixListener::bind(&probe)
            .map_err(|e| format!("cannot create a socket in {}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}
