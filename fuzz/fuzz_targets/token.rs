//! Signed uids from browsers: `Secret::verify` on arbitrary text and on real tokens with
//! an arbitrary splice.
//!
//! Input as text: verifying it must fail (no forging by chance). Input as an edit: byte 0
//! is a position in a freshly minted token, byte 1 how many bytes to cut there, the rest
//! (UTF-8) is inserted; any token that differs from the minted one must fail.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use pushwire::auth::Secret;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new("fuzz-secret");
    let now = UNIX_EPOCH + Duration::from_secs(NOW);

    if let Ok(text) = std::str::from_utf8(data) {
        let got = secret.verify(text, now);
        assert!(got.is_err(), "{text:?} verified as {got:?}");
    }

    let [at, cut, insert @ ..] = data else {
        return;
    };
    let Ok(insert) = std::str::from_utf8(insert) else {
        return;
    };
    let token = secret.mint("user-1", NOW + 3600);
    // A minted token is ASCII, so every byte index is a char boundary.
    let at = usize::from(*at) % (token.len() + 1);
    let end = (at + usize::from(cut % 8)).min(token.len());
    let forged = format!("{}{insert}{}", &token[..at], &token[end..]);
    let got = secret.verify(&forged, now);
    if forged == token {
        assert_eq!(got.as_deref(), Ok("user-1"));
    } else {
        assert!(got.is_err(), "{forged:?} verified as {got:?}");
    }
});
