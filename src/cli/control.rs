//! `pushwire status`, `push`, `online`, `kick`: the subcommands that talk to a running daemon.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::args::{Args, Control};
use crate::cli::settings::sources;

/// Runs a subcommand against the daemon the flags describe.
pub fn control(args: &Args, command: &Control) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("pushwire: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let secret = match sources(args).push_secret.read() {
        Ok(s) => s.map(|s| s.reveal().to_vec()),
        Err(err) => {
            eprintln!("pushwire: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = pushwire::control::Target {
        push: args.push_listen,
        unix: args.push_unix.clone(),
        secret,
        timeout: Duration::from_secs(5),
    };
    match runtime.block_on(run_control(&target, command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pushwire: {err}");
            ExitCode::from(2)
        }
    }
}

/// Prints the answer; `Ok(false)` when the daemon answered but the operation failed.
pub async fn run_control(
    target: &pushwire::control::Target,
    command: &Control,
) -> Result<bool, pushwire::control::ControlError> {
    use pushwire::control::{Session, status};
    match command {
        Control::Status { json, sample_ms } => {
            let st = status(target, Duration::from_millis(*sample_ms)).await?;
            if *json {
                println!("{}", st.json());
            } else {
                print!("{}", st.table());
            }
            Ok(true)
        }
        Control::Push { uid, message } => {
            let mut s = Session::open(target).await?;
            let line = format!("/send {} {message}", serde_json::Value::from(uid.as_str()));
            let reply = s.request(&line).await?;
            println!("{reply}");
            Ok(reply.starts_with("{\"ok\":true"))
        }
        Control::Online { uid } => {
            let mut s = Session::open(target).await?;
            // The reply line as the daemon wrote it (its key order is the wire's).
            let reply = s
                .request(&format!(
                    "/online {}",
                    serde_json::Value::from(uid.as_str())
                ))
                .await?;
            println!("{reply}");
            Ok(reply.contains("\"online\":true"))
        }
        Control::CheckConfig { .. } => unreachable!("check-config does not talk to a daemon"),
        Control::Kick { uid, reason } => {
            let mut s = Session::open(target).await?;
            let mut line = format!("/kick {}", serde_json::Value::from(uid.as_str()));
            if let Some(reason) = reason {
                line.push(' ');
                line.push_str(reason);
            }
            // The reply line as the daemon wrote it (its key order is the wire's).
            let reply = s.request(&line).await?;
            println!("{reply}");
            Ok(reply.starts_with("{\"ok\":true"))
        }
    }
}
