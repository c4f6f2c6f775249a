//! The `pushwire` binary: parse flags, set up logging and limits, bind, run, exit.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use pushwire::reload::Setting;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

mod cli;

use crate::cli::args::{Args, Control, Listen, LogFormat, daemon_flags_first};
use crate::cli::check_config;
use crate::cli::control::control;
use crate::cli::listen::{listen, listen_unix};
use crate::cli::settings::{config_from, exposed_doors, pinned, reload_pusher_apps, reloader};
use crate::cli::signals::Signals;

fn main() -> ExitCode {
    let parsed = Args::command()
        .try_get_matches_from(daemon_flags_first(std::env::args_os()))
        .and_then(|m| Args::from_arg_matches(&m).map(|args| (args, m)));
    let (args, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) if check_config::requested() && err.use_stderr() => {
            return check_config::unparsable(&err);
        }
        Err(err) => err.exit(),
    };
    let pinned = pinned(&matches);
    init_logging(args.log_format);
    match &args.command {
        Some(Control::CheckConfig { no_bind }) => {
            return check_config::run(&args, &pinned, !no_bind);
        }
        Some(command) => return control(&args, command),
        None => {}
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.worker_threads {
        runtime.worker_threads(n.into());
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, pinned)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "fatal");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, pinned: Vec<Setting>) -> std::io::Result<()> {
    // Installed first, before the `listening` line and READY=1: from then on no signal's
    // default action (terminate) can take the daemon down, and a SIGHUP sent as soon as it
    // says it listens is a reload.
    let mut signals = Signals::install()?;
    // Made first, so unreadable TLS files stop the start before anything listens.
    let mut config = config_from(&args)?;
    // Bound before the state is made: an advertised port 0 is the port it got.
    let gateway_listener = match (&mut config.gateway, args.gateway.gateway_listen) {
        (Some(gw), Listen::On(addr)) => {
            let l = listen(addr, args.listen_backlog)?;
            if gw.advertise.port() == 0 {
                gw.advertise.set_port(l.local_addr()?.port());
            }
            Some(l)
        }
        _ => None,
    };
    let ctx = pushwire::state::State::new(config)?;
    let config = &ctx.config;
    let ws = listen(args.ws_listen, args.listen_backlog)?;
    let push = listen(args.push_listen, args.listen_backlog)?;
    let push_unix = match &args.push_unix {
        Some(path) => Some(listen_unix(path, args.push_unix_mode)?),
        None => None,
    };
    let http = match args.http_listen {
        Listen::On(addr) => Some(listen(addr, args.listen_backlog)?),
        Listen::Off => None,
    };
    let gateway = match (&config.gateway, gateway_listener) {
        (Some(gw), Some(gateway)) => {
            let g = pushwire::GatewayListeners {
                register: listen(args.gateway.gateway_register_listen, args.listen_backlog)?,
                gateway,
                ws: match args.gateway.gateway_ws_listen {
                    Listen::On(addr) => Some(listen(addr, args.listen_backlog)?),
                    Listen::Off => None,
                },
            };
            info!(
                register = %g.register.local_addr()?,
                gateway = %g.gateway.local_addr()?,
                greeted_ws = %g.ws.as_ref().map(|l| l.local_addr()).transpose()?.map_or_else(|| "off".to_owned(), |a| a.to_string()),
                advertise = %gw.advertise,
                secret = gw.secret.is_some(),
                "GatewayClient door open"
            );
            Some(g)
        }
        _ => None,
    };
    for (door, addr) in exposed_doors(&args, config) {
        warn!(%addr, "{door} is not on loopback: anyone who can reach it can push to any user");
    }
    let http_local = match &http {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    info!(
        ws = %ws.local_addr()?,
        push = %push.local_addr()?,
        http = %http_local.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        push_unix = ?args.push_unix,
        max_ws_connections = config.max_ws_connections,
        "listening"
    );

    let shutdown = CancellationToken::new();
    let listeners = pushwire::Listeners {
        ws,
        push,
        push_unix,
        http,
        gateway,
    };
    let server = tokio::spawn(pushwire::serve_state(
        ctx.clone(),
        listeners,
        shutdown.clone(),
    ));
    sd_notify("READY=1");
    let mut reloader = reloader(&args, pinned);
    signals
        .until_stop(|| {
            reloader.reload(&ctx);
            reload_pusher_apps(&args, &ctx);
        })
        .await;
    sd_notify("STOPPING=1");
    shutdown.cancel();
    let result = server.await.map_err(std::io::Error::other)?;
    if let Some(path) = &args.push_unix {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Tells systemd (Type=notify) about readiness, via the `$NOTIFY_SOCKET` datagram protocol.
/// A no-op when not started by systemd.
fn sd_notify(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(err) = result {
        warn!(%err, state, "sd_notify failed");
    }
}
