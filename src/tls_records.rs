//! TLS 1.3 record protection once the handshake is over (RFC 8446 §5): the keys rustls
//! negotiated, handed over by it (`dangerous_into_kernel_connection`, the API made for
//! kernel TLS), and ring's AEAD, which rustls uses too.
//!
//! # Why not rustls past the handshake
//! An idle rustls session holds ~3.4 KiB that a plain connection does not: the session
//! itself (1.1 KiB, most of it state only a QUIC or handshaking connection uses), its
//! handshake deframer's 640 B, and both directions' expanded AES-GCM keys (560 B each).
//! What protecting records takes is far less: per direction the key, the IV and a
//! sequence number (~60 B). The keys are expanded for each record instead of kept: that
//! costs about as much as one `memcpy` of a small frame, and an idle connection does not
//! pay it at all.
//!
//! # What this side does not do
//! Key updates (RFC 8446 §4.6.3): a client's KeyUpdate ends the connection with our
//! close_notify, and so does reaching the cipher suite's confidentiality limit on what we
//! send (2^24 records for AES-GCM) instead of updating our key. A client updates its
//! keys when it has sent a great deal (browsers are not known to do it otherwise), and a
//! client sends little on a push connection; a push stream
//! that reaches 16 million frames reconnects. TLS 1.2 sessions (rare: every browser
//! speaks 1.3) stay on rustls for their life.

use std::ops::Range;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{AlertDescription, ConnectionTrafficSecrets, ExtractedSecrets};

/// A record's header: content type, legacy version, length.
pub(crate) const HEADER: usize = 5;

/// The AEAD tag after the ciphertext (the same 16 bytes for every TLS 1.3 suite).
const TAG: usize = 16;

/// What a record adds to its plaintext: header, inner content type, tag.
pub(crate) const OVERHEAD: usize = HEADER + 1 + TAG;

/// Most plaintext a record holds (RFC 8446 §5.1).
pub(crate) const MAX_PLAIN: usize = 16 * 1024;

/// Most ciphertext a record may hold (RFC 8446 §5.2).
const MAX_CIPHER: usize = MAX_PLAIN + 256;

/// Empty application-data records in a row that are taken; the next one is an error (a
/// client could otherwise keep us decrypting records that carry nothing).
const MAX_EMPTY_IN_A_ROW: u8 = 16;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// One direction's key material and record count.
struct Direction {
    alg: &'static aead::Algorithm,
    key: [u8; 32],
    key_len: usize,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Direction, rustls::Error> {
        let (alg, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(rustls::Error::General("unsupported TLS cipher".into())),
        };
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != alg.key_len() || key.len() > 32 || iv.len() != aead::NONCE_LEN {
            return Err(rustls::Error::General("unexpected TLS key size".into()));
        }
        let mut dir = Direction {
            alg,
            key: [0; 32],
            key_len: key.len(),
            iv: [0; aead::NONCE_LEN],
            seq,
        };
        dir.key[..key.len()].copy_from_slice(key);
        dir.iv.copy_from_slice(iv);
        Ok(dir)
    }

    /// The expanded key, for one record.
    fn key(&self) -> LessSafeKey {
        // The length was checked against the algorithm when the key came in.
        let key = UnboundKey::new(self.alg, &self.key[..self.key_len])
            .unwrap_or_else(|_| unreachable!("key length checked in Direction::new"));
        LessSafeKey::new(key)
    }

    /// The next record's nonce (the IV XOR the sequence number, RFC 8446 §5.3), and the
    /// sequence counted. `None` once the count would wrap: a nonce is never reused.
    fn next_nonce(&mut self) -> Option<Nonce> {
        let seq = self.seq;
        self.seq = seq.checked_add(1)?;
        let mut nonce = self.iv;
        for (n, s) in nonce[aead::NONCE_LEN - 8..]
            .iter_mut()
            .zip(seq.to_be_bytes())
        {
            *n ^= s;
        }
        Some(Nonce::assume_unique_for_key(nonce))
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.key = [0; 32];
        self.iv = [0; aead::NONCE_LEN];
        std::hint::black_box((&self.key, &self.iv));
    }
}

/// The sending half of a TLS 1.3 session past its handshake: what a writer needs, the
/// connection's task or a fan-out writing through (`tls.rs`, "Writing through").
pub(crate) struct Sealer {
    tx: Direction,
    /// Records we may send in all before the key must change (the suite's confidentiality
    /// limit, less one for the close_notify).
    tx_limit: u64,
    /// The alert to send after an error of our own, if the error has one.
    alert: Option<AlertDescription>,
    /// Our close_notify (or a fatal alert) is sealed: nothing more may be.
    closed: bool,
}

/// The receiving half: opens the client's records.
pub(crate) struct Opener {
    rx: Direction,
    empty_in_a_row: u8,
    /// The alert to send after an error in what the client sent, if the error has one.
    alert: Option<AlertDescription>,
}

/// What [`Opener::open`] found.
pub(crate) enum Opened {
    /// Every whole record is read; more input is needed.
    Input,
    /// The client's close_notify: the end of its data.
    PeerClosed,
    /// The client updated its key, which this side does not do (see the module doc):
    /// the connection should end with our close_notify.
    KeyUpdate,
}

/// Takes over the keys of a session that has finished its handshake; `limit` is the
/// suite's confidentiality limit.
pub(crate) fn split(
    secrets: ExtractedSecrets,
    limit: u64,
) -> Result<(Sealer, Opener), rustls::Error> {
    Ok((
        Sealer {
            tx: Direction::new(secrets.tx)?,
            tx_limit: limit.saturating_sub(1),
            alert: None,
            closed: false,
        },
        Opener {
            rx: Direction::new(secrets.rx)?,
            empty_in_a_row: 0,
            alert: None,
        },
    ))
}

impl Sealer {
    /// Seals application data in place: `record[HEADER..HEADER + len]` holds the
    /// plaintext, and `record` has [`OVERHEAD`] bytes of room more. Returns the record's
    /// length.
    pub(crate) fn seal_data(
        &mut self,
        record: &mut [u8],
        len: usize,
    ) -> Result<usize, rustls::Error> {
        if self.tx.seq >= self.tx_limit {
            // Ends with our close_notify (see the module doc).
            self.alert = Some(AlertDescription::CloseNotify);
            return Err(rustls::Error::General(
                "TLS confidentiality limit reached: the connection ends".into(),
            ));
        }
        self.seal(APPLICATION_DATA, record, len)
    }

    /// Whether our close_notify is sealed.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// Our close_notify, as a whole record appended to `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        self.seal_alert(AlertDescription::CloseNotify, out)
    }

    /// After an error: the alert it calls for (`alert`, from the [`Opener`], or our own),
    /// appended to `out` (nothing if none).
    pub(crate) fn queue_alert(&mut self, alert: Option<AlertDescription>, out: &mut Vec<u8>) {
        if let Some(alert) = alert.or_else(|| self.alert.take()) {
            let _ = self.seal_alert(alert, out);
        }
    }

    /// An alert record, after which nothing more is sealed: close_notify at level warning,
    /// as every TLS stack sends it, any other fatal.
    fn seal_alert(
        &mut self,
        alert: AlertDescription,
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let level = if alert == AlertDescription::CloseNotify {
            1
        } else {
            2
        };
        let at = out.len();
        out.resize(at + 2 + OVERHEAD, 0);
        out[at + HEADER] = level;
        out[at + HEADER + 1] = alert.into();
        match self.seal(ALERT, &mut out[at..], 2) {
            Ok(n) => {
                out.truncate(at + n);
                Ok(())
            }
            Err(err) => {
                out.truncate(at);
                Err(err)
            }
        }
    }

    fn seal(&mut self, typ: u8, record: &mut [u8], len: usize) -> Result<usize, rustls::Error> {
        let total = len + OVERHEAD;
        if len > MAX_PLAIN || record.len() < total {
            return Err(rustls::Error::General("TLS record too large".into()));
        }
        let cipher_len = (len + 1 + TAG) as u16;
        record[..HEADER].copy_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
        record[3..HEADER].copy_from_slice(&cipher_len.to_be_bytes());
        record[HEADER + len] = typ;
        let nonce = self.tx.next_nonce().ok_or_else(sequence_exhausted)?;
        let (header, body) = record[..total].split_at_mut(HEADER);
        let (inner, tag) = body.split_at_mut(len + 1);
        let sealed = self
            .tx
            .key()
            .seal_in_place_separate_tag(nonce, Aad::from(&*header), inner)
            .map_err(|_| rustls::Error::EncryptError)?;
        tag.copy_from_slice(sealed.as_ref());
        Ok(total)
    }
}

impl Opener {
    /// After an error in [`Opener::open`]: the alert to answer with, if any (sealed by
    /// [`Sealer::queue_alert`]).
    pub(crate) fn take_alert(&mut self) -> Option<AlertDescription> {
        self.alert.take()
    }

    /// Opens every whole record at the front of `incoming` (consumed), appending their
    /// application data to `plain`. On an error the alert to send is kept for
    /// [`Opener::take_alert`].
    pub(crate) fn open(
        &mut self,
        incoming: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<Opened, rustls::Error> {
        let mut at = 0;
        let result = loop {
            match self.open_one(&mut incoming[at..]) {
                Ok(None) => break Ok(Opened::Input),
                Ok(Some((used, Inner::Data(range)))) => {
                    plain.extend_from_slice(&incoming[at..][range]);
                    at += used;
                }
                Ok(Some((used, Inner::Closed))) => {
                    at += used;
                    break Ok(Opened::PeerClosed);
                }
                Ok(Some((used, Inner::KeyUpdate))) => {
                    at += used;
                    break Ok(Opened::KeyUpdate);
                }
                Err((alert, err)) => {
                    self.alert = alert;
                    break Err(err);
                }
            }
        };
        if at >= incoming.len() {
            *incoming = Vec::new();
        } else if at > 0 {
            incoming.drain(..at);
        }
        result
    }

    /// Opens the record at the front of `buf` in place: `None` if it is not whole yet,
    /// else its length and what it held.
    fn open_one(&mut self, buf: &mut [u8]) -> Result<Option<(usize, Inner)>, Refused> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        // After the handshake every record is protected application data (RFC 8446 §5):
        // a change_cipher_spec or a plaintext alert is no longer allowed.
        if header[0] != APPLICATION_DATA {
            return Err(unexpected(
                "a TLS record of an unprotected type after the handshake",
            ));
        }
        if len > MAX_CIPHER {
            return Err((
                Some(AlertDescription::RecordOverflow),
                rustls::Error::General("TLS record over its size limit".into()),
            ));
        }
        if len < TAG + 1 {
            return Err((
                Some(AlertDescription::DecodeError),
                rustls::Error::DecryptError,
            ));
        }
        let Some(record) = buf.get_mut(..HEADER + len) else {
            return Ok(None);
        };
        let nonce = self
            .rx
            .next_nonce()
            .ok_or_else(|| (Some(AlertDescription::InternalError), sequence_exhausted()))?;
        let (header, body) = record.split_at_mut(HEADER);
        let inner = self
            .rx
            .key()
            .open_in_place(nonce, Aad::from(&*header), body)
            .map_err(|_| {
                (
                    Some(AlertDescription::BadRecordMac),
                    rustls::Error::DecryptError,
                )
            })?;
        // TLSInnerPlaintext: content, its type, zero padding (RFC 8446 §5.4).
        let Some(end) = inner.iter().rposition(|&b| b != 0) else {
            return Err(unexpected("a TLS record without a content type"));
        };
        if end > MAX_PLAIN {
            return Err((
                Some(AlertDescription::RecordOverflow),
                rustls::Error::General("TLS plaintext over its size limit".into()),
            ));
        }
        let used = HEADER + len;
        let content = HEADER..HEADER + end;
        match inner[end] {
            APPLICATION_DATA if end == 0 => {
                self.empty_in_a_row += 1;
                if self.empty_in_a_row > MAX_EMPTY_IN_A_ROW {
                    return Err(unexpected("too many empty TLS records in a row"));
                }
                Ok(Some((used, Inner::Data(content))))
            }
            APPLICATION_DATA => {
                self.empty_in_a_row = 0;
                Ok(Some((used, Inner::Data(content))))
            }
            // close_notify (level 1 or 2, description 0).
            ALERT if end == 2 && inner[1] == 0 => Ok(Some((used, Inner::Closed))),
            // Any other alert ends the session; an alert is not answered with one.
            ALERT if end == 2 => Err((
                None,
                rustls::Error::AlertReceived(AlertDescription::from(inner[1])),
            )),
            // key_update (type 24, length 1): not followed (see the module doc).
            HANDSHAKE if end == 5 && inner[..4] == [24, 0, 0, 1] => {
                Ok(Some((used, Inner::KeyUpdate)))
            }
            _ => Err(unexpected("an unexpected TLS message after the handshake")),
        }
    }
}

/// What one record held.
enum Inner {
    /// Application data: its place in the record.
    Data(Range<usize>),
    Closed,
    KeyUpdate,
}

/// Why a record was refused: the alert to answer with (if any), and the error.
type Refused = (Option<AlertDescription>, rustls::Error);

fn unexpected(why: &str) -> Refused {
    (
        Some(AlertDescription::UnexpectedMessage),
        rustls::Error::General(why.into()),
    )
}

fn sequence_exhausted() -> rustls::Error {
    rustls::Error::General("TLS record sequence exhausted".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    /// The server's sending half and the client's receiving half of one session.
    fn pair() -> (Sealer, Opener) {
        let secrets = |a: u8, b: u8| ExtractedSecrets {
            tx: (0, secret(a)),
            rx: (0, secret(b)),
        };
        let (server, _) = split(secrets(1, 2), 1 << 24).unwrap();
        let (_, client) = split(secrets(2, 1), 1 << 24).unwrap();
        (server, client)
    }

    fn secret(k: u8) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: AeadKey::from([k; 32]),
            iv: Iv::new([k; 12]),
        }
    }

    fn seal(r: &mut Sealer, data: &[u8]) -> Vec<u8> {
        let mut record = vec![0; data.len() + OVERHEAD];
        record[HEADER..HEADER + data.len()].copy_from_slice(data);
        let n = r.seal_data(&mut record, data.len()).unwrap();
        record.truncate(n);
        record
    }

    #[test]
    fn records_round_trip_whole_and_in_pieces() {
        let (mut server, mut client) = pair();
        let mut wire = seal(&mut server, b"hello");
        wire.extend(seal(&mut server, b""));
        wire.extend(seal(&mut server, b"world"));
        let mut plain = Vec::new();
        let mut incoming = wire[..7].to_vec();
        assert!(matches!(
            client.open(&mut incoming, &mut plain),
            Ok(Opened::Input)
        ));
        assert!(plain.is_empty());
        incoming.extend_from_slice(&wire[7..]);
        assert!(matches!(
            client.open(&mut incoming, &mut plain),
            Ok(Opened::Input)
        ));
        assert_eq!(plain, b"helloworld");
        assert!(incoming.is_empty());
        let mut out = Vec::new();
        server.close_notify(&mut out).unwrap();
        assert!(matches!(
            client.open(&mut out, &mut plain),
            Ok(Opened::PeerClosed)
        ));
    }

    #[test]
    fn a_changed_byte_or_a_replayed_record_is_refused() {
        let (mut server, mut client) = pair();
        let mut record = seal(&mut server, b"hello");
        record[HEADER + 1] ^= 1;
        let mut plain = Vec::new();
        assert!(client.open(&mut record, &mut plain).is_err());
        assert_eq!(client.alert, Some(AlertDescription::BadRecordMac));

        let (mut server, mut client) = pair();
        let record = seal(&mut server, b"hello");
        let mut twice = record.clone();
        twice.extend_from_slice(&record);
        assert!(client.open(&mut twice, &mut plain).is_err());
        assert_eq!(plain, b"hello");
    }

    #[test]
    fn the_confidentiality_limit_ends_the_stream() {
        let (mut server, _) = pair();
        server.tx_limit = 2;
        seal(&mut server, b"a");
        seal(&mut server, b"b");
        let mut record = vec![0; 1 + OVERHEAD];
        assert!(server.seal_data(&mut record, 1).is_err());
        // The close_notify still has its record.
        assert!(server.close_notify(&mut Vec::new()).is_ok());
    }
}
