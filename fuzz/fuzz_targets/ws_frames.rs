//! Browser frames after the upgrade: byte 0 picks the message limit (0..=255 * 16), byte 1
//! the read size; the rest is the stream, fed in pieces. Never panics, and never holds
//! more than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushwire::frames::FrameReader;

fuzz_target!(|data: &[u8]| {
    let [max, step, stream @ ..] = data else {
        return;
    };
    let max = usize::from(*max) * 16;
    let step = usize::from(*step).max(1);
    let mut reader = FrameReader::default();
    let mut fed = 0;
    for piece in stream.chunks(step) {
        reader.feed(piece);
        fed += piece.len();
        loop {
            match reader.parse(max) {
                Ok(Some(_)) => assert!(reader.buffered() <= fed),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
