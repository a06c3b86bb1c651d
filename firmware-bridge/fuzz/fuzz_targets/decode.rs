//! `protocol::decode` on arbitrary bytes: it must never panic, every frame it
//! accepts must pass `Frame::validate`, and re-encoding an accepted frame
//! must give back exactly the input bytes (one encoding per frame: the
//! decoder refuses over-long varints), which decode to the same frame.
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
    // Decoding accepts only the shortest varints, the one encoding the
    // encoder writes: an accepted input re-encodes to itself.
    let bytes: &[u8] = bytes;
    assert_eq!(bytes, data, "re-encoded frame differs from the input");
    let again = decode(bytes).expect("a re-encoded frame decodes");
    assert_eq!(again, frame, "re-encoded frame decodes to another frame");
    let mut buffer2 = vec![0u8; bytes.len()];
    let bytes2 = encode(&again, &mut buffer2).expect("re-encodes into an exact buffer");
    assert_eq!(&bytes2[..], bytes, "encode is not a fixed point");
});
