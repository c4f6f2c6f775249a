//! The settings the flags give: the `Config` the daemon starts with, the reloadable
//! sources a SIGHUP reads again, the Pusher apps, and the doors open to anyone.

use std::net::SocketAddr;
use std::time::Duration;

use clap::CommandFactory;
use clap::parser::ValueSource;
use pushwire::auth::Secret;
use pushwire::reload::{Reloader, SecretSource, Setting, Sources};
use tracing::{info, warn};

use crate::cli::args::{Args, Listen};

pub fn http_addr(listen: Listen) -> Option<SocketAddr> {
    match listen {
        Listen::On(addr) => Some(addr),
        Listen::Off => None,
    }
}

/// The doors that push to any user and listen beyond loopback with neither an allow-list
/// nor a secret (the daemon warns about each at start).
pub fn exposed_doors(args: &Args, config: &pushwire::Config) -> Vec<(&'static str, SocketAddr)> {
    let open_to_all = config.push_allow.is_none() && config.push_secret.is_none();
    [
        ("push port", Some(args.push_listen)),
        ("HTTP door", http_addr(args.http_listen)),
    ]
    .into_iter()
    .filter_map(|(door, addr)| Some((door, addr?)))
    .filter(|(_, addr)| open_to_all && !addr.ip().is_loopback())
    .collect()
}

/// The reloadable settings given on the command line: a reload keeps them, whatever the
/// env file says (a flag is the operator's explicit choice for this process).
pub fn pinned(m: &clap::ArgMatches) -> Vec<Setting> {
    let cmd = Args::command();
    pushwire::reload::VARIABLES
        .iter()
        .filter(|(var, _)| {
            cmd.get_arguments().any(|a| {
                a.get_env().is_some_and(|e| e == *var)
                    && m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
            })
        })
        .map(|&(_, setting)| setting)
        .collect()
}

/// The reloadable settings as the flags and environment give them.
pub fn sources(args: &Args) -> Sources {
    Sources {
        jwt_secret: SecretSource::given(
            args.jwt_secret_file.as_deref(),
            args.jwt_secret.as_deref(),
        ),
        push_secret: SecretSource::given(
            args.push_secret_file.as_deref(),
            args.push_secret.as_deref(),
        ),
        events_secret: SecretSource::given(
            args.events_secret_file.as_deref(),
            args.events_secret.as_deref(),
        ),
        gateway_secret: args.gateway.source(),
        allowed_origins: args.allowed_origins.clone().and_then(|o| o.0),
        push_allow: args.push_allow.clone().and_then(|a| a.0),
        trusted_proxies: args.trusted_proxies.0.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
    }
}

/// SIGHUP's memory: the settings in force, the reload env file, what it may not change.
pub fn reloader(args: &Args, pinned: Vec<Setting>) -> Reloader {
    let known = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    Reloader::new(args.reload_env_file.clone(), sources(args), pinned, known)
}

/// The TLS files the flags name; both or neither.
pub fn tls_files(args: &Args) -> Result<Option<pushwire::tls::TlsFiles>, String> {
    Ok(sources(args)
        .tls()?
        .map(|(cert, key)| pushwire::tls::TlsFiles { cert, key }))
}

pub fn config_from(args: &Args) -> std::io::Result<pushwire::Config> {
    let (nofile, err) = raise_nofile();
    if let Some(err) = err {
        warn!(%err, "cannot raise the open-files limit");
    }
    let given = sources(args);
    let jwt_secret = given.jwt_secret.read().map_err(std::io::Error::other)?;
    let push_secret = given.push_secret.read().map_err(std::io::Error::other)?;
    let events_secret = given.events_secret.read().map_err(std::io::Error::other)?;
    if jwt_secret.is_none() {
        info!("no JWT secret: the first frame is trusted as the uid");
    }
    let push_plain = push_secret
        .as_ref()
        .map(|s| String::from_utf8_lossy(s.reveal()).into_owned());
    let mut config = unvalidated_config(args, jwt_secret, push_secret, nofile);
    config.events_secret = events_secret;
    config.pusher_apps = pusher_apps(args).map_err(std::io::Error::other)?;
    config.gateway = args
        .gateway
        .config(push_plain.as_deref())
        .map_err(std::io::Error::other)?;
    config.redis_queue = args
        .queue
        .config(config.redis.as_deref())
        .map_err(std::io::Error::other)?;
    if let Some((requested, capacity)) = ws_overcommit(args, &config, nofile) {
        warn!(
            requested,
            capacity, nofile, "--max-ws-connections exceeds what the open-files limit allows"
        );
    }
    let (config, notes) = config.validate();
    for note in notes {
        warn!("{note}");
    }
    let trusted: Vec<String> = config
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    info!(
        trusted_proxies = %if trusted.is_empty() { "none".to_owned() } else { trusted.join(",") },
        "browser addresses come from the forwarding headers of these peers' connections"
    );
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    info!(
        nofile,
        max_ws_connections = config.max_ws_connections,
        max_pending_handshakes = config.max_pending_handshakes,
        workers,
        "connection capacity"
    );
    Ok(config)
}

/// The apps of `--pusher-apps`, read and checked whole.
pub fn pusher_apps(
    args: &Args,
) -> Result<Option<std::sync::Arc<pushwire::channels::Apps>>, String> {
    let Some(path) = &args.pusher_apps else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--pusher-apps {}: {e}", path.display()))?;
    let apps = pushwire::channels::Apps::parse(&text)
        .map_err(|e| format!("--pusher-apps {}: {e}", path.display()))?;
    info!(
        apps = apps.len(),
        "Pusher apps served at /app/{{key}} and /apps/{{id}}/"
    );
    Ok(Some(std::sync::Arc::new(apps)))
}

/// SIGHUP: reads `--pusher-apps` again, whole; a file that cannot be read or is wrong
/// changes nothing. Connections keep the app they connected with; new ones, and every API
/// call, use the new apps.
pub fn reload_pusher_apps(args: &Args, ctx: &pushwire::state::State) {
    if args.pusher_apps.is_none() {
        return;
    }
    match pusher_apps(args).and_then(|apps| {
        let apps = apps.ok_or("no --pusher-apps")?;
        ctx.reload_pusher_apps(std::sync::Arc::unwrap_or_clone(apps))
    }) {
        Ok(changes) if changes.is_empty() => info!("Pusher apps reloaded: nothing changed"),
        Ok(changes) => warn!(changed = %changes.join(", "), "Pusher apps reloaded"),
        Err(err) => warn!(error = %err, "Pusher apps reload failed; the apps in use stay"),
    }
}

/// Raises the soft open-files limit to the hard one (each socket is one descriptor) and
/// returns the limit in force, with the error if it could not be raised.
pub fn raise_nofile() -> (u64, Option<std::io::Error>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => (n, None),
        Err(err) => (
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft),
            Some(err),
        ),
    }
}

/// `--max-ws-connections` and what the open-files limit allows, when the first exceeds
/// the second.
pub fn ws_overcommit(
    args: &Args,
    config: &pushwire::Config,
    nofile: u64,
) -> Option<(usize, usize)> {
    let capacity = config.ws_capacity(nofile, matches!(args.http_listen, Listen::On(_)));
    args.max_ws_connections
        .filter(|&n| n > capacity)
        .map(|n| (n, capacity))
}

/// The daemon's configuration from its flags, before `Config::validate`.
pub fn unvalidated_config(
    args: &Args,
    jwt_secret: Option<Secret>,
    push_secret: Option<Secret>,
    nofile: u64,
) -> pushwire::Config {
    let mut config = pushwire::Config {
        max_line_bytes: args.max_line_bytes,
        max_uid_bytes: args.max_uid_bytes,
        max_message_bytes: args.max_message_bytes,
        max_handshake_bytes: args.max_handshake_bytes,
        bind_timeout: Duration::from_millis(args.bind_timeout_ms),
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        pong_timeout: Duration::from_millis(args.pong_timeout_ms),
        queue_depth: args.queue_depth,
        queue_bytes: args.queue_bytes,
        max_ws_connections: 0,
        max_push_connections: args.max_push_connections,
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        group_grace: Duration::from_millis(args.group_grace_ms),
        max_groups: args.max_groups,
        max_group_members: args.max_group_members,
        max_list_uids: args.max_list_uids,
        jwt_secret,
        allowed_origins: args.allowed_origins.clone().and_then(|o| o.0),
        max_connections_per_ip: args.max_connections_per_ip,
        max_pending_handshakes: args.max_pending_handshakes.unwrap_or(0),
        max_pending_per_ip: args.max_pending_per_ip,
        trusted_proxies: args.trusted_proxies.0.clone(),
        push_allow: args.push_allow.clone().and_then(|a| a.0),
        push_secret,
        push_idle_timeout: (args.push_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(args.push_idle_timeout_ms)),
        max_group_bytes: args.max_group_bytes,
        http_request_timeout: Duration::from_millis(args.http_request_timeout_ms),
        http_max_header_bytes: args.http_max_header_bytes,
        http_max_body_bytes: args.http_max_body_bytes,
        max_http_connections: args.max_http_connections,
        max_http_connections_per_ip: args.max_http_connections_per_ip,
        redis: args.redis.clone().filter(|u| !u.is_empty()),
        redis_prefix: args.redis_prefix.clone(),
        cluster_timeout: Duration::from_millis(args.cluster_timeout_ms),
        cluster_link_timeout: Duration::from_millis(args.cluster_link_timeout_ms),
        cluster_publish_queue: args.cluster_publish_queue,
        cluster_message_buffer: args.cluster_message_buffer,
        // (clap's `requires` makes them come together.)
        tls: tls_files(args).unwrap_or_default(),
        history_messages: args.history_messages,
        history_bytes: args.history_bytes,
        history_age: Duration::from_millis(args.history_age_ms),
        history_total_bytes: args.history_total_bytes,
        history_keep: Duration::from_millis(args.history_keep_ms),
        history_max_uids: args.history_max_uids,
        max_stale_acks: args.max_stale_acks,
        max_queue_ttl: Duration::from_millis(args.max_queue_ttl_ms),
        max_ack_wait: Duration::from_millis(args.max_ack_wait_ms),
        dedupe_window: (args.dedupe_window_ms > 0)
            .then(|| Duration::from_millis(args.dedupe_window_ms)),
        dedupe_max_entries: args.dedupe_max_entries,
        events: pushwire::events::EventsConfig {
            listeners: args.events_url.iter().flat_map(|u| u.0.clone()).collect(),
            queue: args.events_queue,
            queue_bytes: args.events_queue_bytes,
            delivery: pushwire::events::Delivery {
                batch_events: args.events_batch,
                batch_bytes: args.events_batch_bytes,
                timeout: Duration::from_millis(args.events_timeout_ms),
                attempts: args.events_attempts,
            },
            stream_buffer: args.events_stream_buffer,
            debounce: Duration::from_millis(args.events_debounce_ms),
            message: pushwire::events::MessageLimits {
                max_bytes: args.events_message_bytes,
                per_second: args.events_message_rate,
            },
        },
        // Read by the caller with the other secrets.
        events_secret: None,
        pusher_apps: None,
        pusher_activity_timeout: Duration::from_millis(args.pusher_activity_timeout_ms),
        pusher_pong_timeout: Duration::from_millis(args.pusher_pong_timeout_ms),
        gateway: None,
        redis_queue: None,
    };
    let capacity = config.ws_capacity(nofile, matches!(args.http_listen, Listen::On(_)));
    config.max_ws_connections = args.max_ws_connections.unwrap_or(capacity);
    config
}
