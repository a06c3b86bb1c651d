//! A stream of frames through what a receiver does after `decode`:
//! `SequenceGuard::admit` and `ClockOffset::admit` with a receive time taken
//! from the input. Nothing may panic, and the guards' answers must agree with
//! their documented state changes.
//!
//! Input layout, repeated: `len: u8`, `clock: [u8; 9]`, then `len` bytes of
//! frame. `clock[0]` picks how the receive time is made: even → the frame's
//! stamp plus `u16(clock[1..3]) / 1000` s plus `i16(clock[3..5]) / 1e6` s
//! (realistic transit times around the sender's clock), odd → the raw f64
//! `clock[1..9]` (any value, NaN and infinities included).
#![no_main]

use cerebellum_firmware_bridge::protocol::{ClockOffset, DecodeError, SequenceGuard, decode};
use libfuzzer_sys::fuzz_target;

const MAX_AGE: f64 = 0.05;

fuzz_target!(|data: &[u8]| {
    let mut sequence = SequenceGuard::default();
    let mut clock = ClockOffset::default();
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let len = *len as usize;
        let Some((control, tail)) = tail.split_first_chunk::<9>() else {
            break;
        };
        let frame_bytes = &tail[..len.min(tail.len())];
        rest = &tail[frame_bytes.len()..];
        let Ok(frame) = decode(frame_bytes) else {
            continue;
        };
        let header = frame.header;

        let before = sequence;
        match sequence.admit(&header) {
            Ok(()) => assert_eq!(sequence.last(), Some(header.seq)),
            Err(DecodeError::Reordered { last, found }) => {
                assert_eq!(found, header.seq);
                assert_eq!(before.last(), Some(last));
                assert_eq!(
                    sequence.last(),
                    Some(last),
                    "a refused frame moved the guard"
                );
            }
            Err(other) => panic!("SequenceGuard::admit returned {other:?}"),
        }

        let local_now = if control[0] % 2 == 0 {
            let delay = u16::from_le_bytes([control[1], control[2]]) as f64 / 1000.0;
            let jitter = i16::from_le_bytes([control[3], control[4]]) as f64 / 1e6;
            header.stamp + delay + jitter
        } else {
            f64::from_le_bytes(control[1..9].try_into().unwrap())
        };
        // What `admit` will compute, on a copy.
        let mut probe = clock;
        let age = probe.observe(&header, local_now);
        assert!(age >= 0.0, "negative or NaN age {age}");
        let result = clock.admit(&header, local_now, MAX_AGE);
        match result {
            Ok(()) => assert!(age <= MAX_AGE),
            Err(DecodeError::Stale { age_ms }) => {
                assert!(age > MAX_AGE);
                assert_eq!(age_ms, (age * 1000.0).min(u32::MAX as f64) as u32);
            }
            Err(other) => panic!("ClockOffset::admit returned {other:?}"),
        }
        assert!(clock.offset().is_some());
        let _ = clock.sender_now(local_now);
    }
});
