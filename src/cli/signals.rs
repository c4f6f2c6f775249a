//! The signals the daemon handles: SIGTERM and SIGINT stop it, SIGHUP reloads, the rest are ignored.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

/// Every signal an operator or a tool may send us by habit.
///
/// Left at their default action, SIGHUP (a "reload" reflex, logrotate's `postrotate`),
/// SIGUSR1/2, SIGQUIT and SIGALRM would kill the process at once: browsers would see a
/// bare TCP close and messages already answered `ok` would be lost, and systemd counts
/// death by SIGHUP as a clean exit. So each gets a handler: SIGTERM and SIGINT stop
/// gracefully, SIGHUP reloads ([`reload`]); the rest are logged and otherwise ignored.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    quit: Signal,
    alrm: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            quit: signal(SignalKind::quit())?,
            alrm: signal(SignalKind::alarm())?,
        })
    }

    /// Returns when SIGTERM or SIGINT arrives; calls `reload` on each SIGHUP, logs and
    /// ignores the others meanwhile.
    pub async fn until_stop(&mut self, mut reload: impl FnMut()) {
        loop {
            let ignored = tokio::select! {
                _ = self.term.recv() => return info!("SIGTERM received"),
                _ = self.int.recv() => return info!("SIGINT received"),
                _ = self.hup.recv() => {
                    info!(signal = "SIGHUP", "reloading");
                    reload();
                    continue;
                }
                _ = self.usr1.recv() => "SIGUSR1",
                _ = self.usr2.recv() => "SIGUSR2",
                _ = self.quit.recv() => "SIGQUIT",
                _ = self.alrm.recv() => "SIGALRM",
            };
            warn!(
                signal = ignored,
                "signal received and ignored (SIGTERM or SIGINT stop the daemon \
                 gracefully, SIGHUP reloads)"
            );
        }
    }
}
