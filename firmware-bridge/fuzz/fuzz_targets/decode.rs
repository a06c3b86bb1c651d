//! `protocol::decode` on arbitrary bytes: it must never panic, every frame it
//! accepts must pass `Frame::validate`, and re-encoding an accepted frame
//! must give bytes that decode to the same frame (and are a fixed point of
//! decode → encode, no longer than the input).
#![no_main]

use cerebellum_firmware_bridge::protocol::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode(data) else {
        return;
    };
    assert!(
        frame.validate().is_ok(),
        "decode accepted an invalid frame: {frame:?}"
    );
    let mut buffer = vec![0u8; 70_000.max(data.len())];
    let bytes = encode(&frame, &mut buffer).expect("an accepted frame re-encodes");
    // Decoding accepts non-shortest varints; encoding writes the shortest.
    assert!(
        bytes.len() <= data.len(),
        "re-encoded frame is longer than the input"
    );
    let bytes: &[u8] = bytes;
    let again = decode(bytes).expect("a re-encoded frame decodes");
    assert_eq!(again, frame, "re-encoded frame decodes to another frame");
    let mut buffer2 = vec![0u8; bytes.len()];
    let bytes2 = encode(&again, &mut buffer2).expect("re-encodes into an exact buffer");
    assert_eq!(&bytes2[..], bytes, "encode is not a fixed point");
});
