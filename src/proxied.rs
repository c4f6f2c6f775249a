//! The browser port's upgrade, and what it does for a trusted proxy (`--trusted-proxies`).
//!
//! Every connection of a proxy on the same host comes from its address, so counting them
//! there at accept would cap the whole site at `--max-connections-per-ip`. A trusted
//! proxy's connection is therefore admitted at accept with the server-wide budgets only;
//! once its request head is read, the per-address places are taken for the client its
//! forwarding headers name ([`crate::forwarded`]), and refused with the same 429 as a
//! direct connection. Anyone else was admitted by TCP peer at accept, and their headers
//! are never read.

use std::net::IpAddr;

use tracing::debug;

use crate::transport::Transport;

use crate::access::{Admission, Admitted, Cidr, Refused};
use crate::forwarded;
use crate::handshake::{self, HandshakeError, Opened, Policy};

/// A connection from a trusted proxy, admitted without an address.
pub(crate) struct Proxied {
    admission: Admission,
    peer: IpAddr,
}

impl Proxied {
    /// `Some` when `peer` is one of the `trusted` proxies.
    pub(crate) fn new(
        peer: Option<IpAddr>,
        trusted: &[Cidr],
        admission: &Admission,
    ) -> Option<Proxied> {
        let peer = peer.filter(|ip| forwarded::trusted(trusted, *ip))?;
        Some(Proxied {
            admission: admission.clone(),
            peer,
        })
    }
}

/// Why [`upgrade`] did not upgrade.
pub(crate) enum Failed {
    /// The handshake itself failed (already answered, or the peer is gone).
    Handshake(HandshakeError),
    /// The client a trusted proxy named is over a per-address cap: not answered yet.
    Refused(Transport, Refused),
}

/// Reads the request head (on `io`, from [`handshake::connect`]); for a trusted proxy's
/// connection takes the client's places into `places` (admitted without an address); then
/// answers 101 or an HTTP error.
#[allow(clippy::manual_async_fn)] // measured: see the comment
pub(crate) fn upgrade<'a>(
    mut io: Transport,
    policy: &'a Policy<'a>,
    proxied: Option<Proxied>,
    trusted: &'a [Cidr],
    places: &'a mut Admitted,
) -> impl Future<Output = Result<Opened, Failed>> + 'a {
    // Not an `async fn` (see `handshake::connect`).
    async move {
        let (head, rest) = handshake::read_head(&mut io, policy.max_bytes)
            .await
            .map_err(Failed::Handshake)?;
        if let Some(p) = proxied {
            let client = forwarded::client(&head, p.peer, trusted).unwrap_or_else(|why| {
                debug!(%why, "forwarding headers unusable: counting the proxy's own address");
                p.peer
            });
            tracing::Span::current().record("client", tracing::field::display(client));
            if let Err(why) = p.admission.admit_forwarded(client, places) {
                return Err(Failed::Refused(io, why));
            }
        }
        // Boxed: its state (the upgrade's, the refusals') lives for the microseconds of
        // the answer, and inline it would size this future, which a connection sending
        // its request head holds all along.
        Box::pin(handshake::accept(io, head, rest, policy))
            .await
            .map_err(Failed::Handshake)
    }
}
