use super::*;

fn header(seq: u32) -> Header<'static> {
    Header {
        protocol: PROTOCOL_VERSION,
        robot: "arm0",
        boot: 7,
        seq,
        stamp: 1.5,
    }
}

fn encoded(body: Body) -> Vec<u8> {
    encode_to_vec(&Frame {
        header: header(1),
        body,
    })
}

const JOINTS: [f32; 6] = [0.1, -0.2, 0.3, 0.0, 1.0, 0.5];

fn state_bytes() -> Vec<u8> {
    encoded(Body::State(State {
        episode: 3,
        applied_command: 41,
        holding: false,
        estopped: false,
        values: Floats::Values(&JOINTS),
    }))
}

fn every_body() -> Vec<Body<'static>> {
    static PIXELS: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    vec![
        Body::State(State {
            episode: 3,
            applied_command: 41,
            holding: true,
            estopped: false,
            values: Floats::Values(&JOINTS),
        }),
        Body::Image(Image {
            camera: "wrist",
            state_seq: 9,
            taken_at: 1.25,
            height: 2,
            width: 2,
            channels: 3,
            encoding: ImageEncoding::Raw8,
            data: &PIXELS,
        }),
        Body::Command(Command {
            episode: 3,
            policy_version: 12,
            expires_at: 1.6,
            values: Floats::Values(&JOINTS),
        }),
        Body::Reset(Reset {
            episode: 4,
            seed: u64::MAX,
        }),
        Body::ResetAck(ResetAck {
            episode: 4,
            seed: 99,
            task_instance: 5,
            instruction: "reach the red dot",
        }),
        Body::Episode(EpisodeEvent {
            episode: 4,
            applied_command: 8,
            reward: Some(-0.25),
            terminated: false,
            truncated: true,
            success: Some(false),
        }),
        Body::Teleop(Teleop {
            phase: TeleopPhase::Begin,
            values: Floats::Values(&JOINTS),
        }),
        Body::EStop(EStop {
            engaged: true,
            reason: "operator",
        }),
        Body::Heartbeat(Heartbeat {
            episode: 2,
            estopped: true,
        }),
        Body::Meta(Meta {
            control_rate_hz: 50.0,
            command_timeout_s: 0.1,
            lockstep: false,
            spec_json: "{}",
        }),
    ]
}

#[test]
fn every_message_round_trips() {
    for body in every_body() {
        let frame = Frame {
            header: header(5),
            body,
        };
        let bytes = encode_to_vec(&frame);
        assert_eq!(decode(&bytes), Ok(frame), "{:?}", body.kind());
        // Into a fixed buffer, as firmware does, the same bytes.
        let mut buffer = [0u8; 256];
        assert_eq!(encode(&frame, &mut buffer).unwrap(), &bytes[..]);
    }
}

#[test]
fn state_layout_is_what_docs_protocol_md_says() {
    let bytes = state_bytes();
    // version 1, "arm0", boot 7, seq 1, stamp 1.5 (f64 LE)
    let mut expected = vec![1, 4, b'a', b'r', b'm', b'0', 7, 1];
    expected.extend_from_slice(&1.5f64.to_le_bytes());
    // Body tag 0 (State), episode 3, applied_command 41, holding 0,
    // estopped 0, 24 bytes of floats.
    expected.extend_from_slice(&[0, 3, 41, 0, 0, 24]);
    for v in JOINTS {
        expected.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(bytes, expected);
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    for body in every_body() {
        let bytes = encoded(body);
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(DecodeError::Truncated),
                "{:?} cut at {cut}",
                body.kind()
            );
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = state_bytes();
    bytes.push(0);
    assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 1 }));
}

#[test]
fn an_unknown_version_is_refused_before_the_layout_is_read() {
    let mut bytes = state_bytes();
    bytes[0] = 2;
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::UnknownVersion { found: 2 })
    );
    // Even when the rest is garbage.
    assert_eq!(
        decode(&[0x80, 0x01, 0xff]),
        Err(DecodeError::UnknownVersion { found: 128 })
    );
}

#[test]
fn malformed_bytes_are_refused() {
    let good = state_bytes();
    let body_tag = 8 + 8; // version, robot (5 bytes), boot, seq, stamp
    let mut unknown_tag = good.clone();
    unknown_tag[body_tag] = 42;
    assert_eq!(decode(&unknown_tag), Err(DecodeError::Malformed));
    let mut bad_bool = good.clone();
    bad_bool[body_tag + 3] = 2;
    assert_eq!(decode(&bad_bool), Err(DecodeError::Malformed));
    let mut bad_utf8 = good.clone();
    bad_utf8[2] = 0xff;
    assert_eq!(decode(&bad_utf8), Err(DecodeError::Malformed));
    // A varint longer than its type allows.
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Malformed)
    );
}

/// Bytes from a hex string with spaces (as the frames in
/// docs/protocol.md are written).
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

/// The Command with multi-byte varints in docs/protocol.md: boot 0x1234,
/// seq 300, stamp 2.0; episode 3, policy_version 12, expires_at 2.06,
/// values [0.1, -0.2].
const COMMAND_EXAMPLE: &str = "01 04 61 72 6d 30 b4 24 ac 02 00 00 00 00 00 00 00 40 \
                               02 03 0c 7b 14 ae 47 e1 7a 00 40 \
                               08 cd cc cc 3d cd cc 4c be";

/// `bytes` with the varint whose last byte is at `at` padded with one
/// continuation byte: the same value in one byte more (`05` → `85 00`).
fn pad_varint(bytes: &[u8], at: usize) -> Vec<u8> {
    assert!(bytes[at] < 0x80, "byte {at} does not end a varint");
    let mut padded = bytes.to_vec();
    padded[at] |= 0x80;
    padded.insert(at + 1, 0x00);
    padded
}

#[test]
fn the_command_example_in_docs_protocol_md_decodes() {
    let bytes = hex(COMMAND_EXAMPLE);
    assert_eq!(bytes.len(), 38);
    let frame = decode(&bytes).unwrap();
    assert_eq!(
        frame.header,
        Header {
            protocol: 1,
            robot: "arm0",
            boot: 0x1234,
            seq: 300,
            stamp: 2.0
        }
    );
    assert_eq!(
        frame.body,
        Body::Command(Command {
            episode: 3,
            policy_version: 12,
            expires_at: 2.06,
            values: Floats::Values(&[0.1, -0.2]),
        })
    );
    assert_eq!(encode_to_vec(&frame), bytes);
}

#[test]
fn over_long_varints_are_malformed_wherever_they_are() {
    // The last byte of every varint of the worked State example: protocol,
    // robot length, boot, seq, body tag, episode, applied_command and the
    // float byte count.
    let state = state_bytes();
    for (at, field) in [
        (0, "protocol"),
        (1, "robot length"),
        (6, "boot"),
        (7, "seq"),
        (16, "body tag"),
        (17, "episode"),
        (18, "applied_command"),
        (21, "values byte count"),
    ] {
        let padded = pad_varint(&state, at);
        assert_eq!(decode(&padded), Err(DecodeError::Malformed), "{field}");
        // Padded twice, and padded with the frame cut after the padding.
        let twice = pad_varint(&padded, at + 1);
        assert_eq!(decode(&twice), Err(DecodeError::Malformed), "{field}");
    }
    // Multi-byte varints (boot b4 24, seq ac 02) and a u64
    // (policy_version) of the Command example.
    let command = hex(COMMAND_EXAMPLE);
    for (at, field) in [(7, "boot"), (9, "seq"), (20, "policy_version")] {
        assert_eq!(
            decode(&pad_varint(&command, at)),
            Err(DecodeError::Malformed),
            "{field}"
        );
    }
    // A version padded is malformed, not another version, and not read on.
    assert_eq!(decode(&hex("81 00")), Err(DecodeError::Malformed));
    assert_eq!(decode(&hex("82 00 ff")), Err(DecodeError::Malformed));
    assert_eq!(decode(&hex("81 80 00")), Err(DecodeError::Malformed));
    // Maximal varints in their shortest form are fine: seq u32::MAX is
    // `ff ff ff ff 0f`, policy_version u64::MAX ten bytes.
    let mut header = header(u32::MAX);
    header.boot = u32::MAX;
    let max = encode_to_vec(&Frame {
        header,
        body: Body::Command(Command {
            episode: u32::MAX,
            policy_version: u64::MAX,
            expires_at: 1.0,
            values: Floats::Values(&JOINTS),
        }),
    });
    assert_eq!(&max[6..11], &hex("ff ff ff ff 0f")[..]);
    assert!(decode(&max).is_ok());
}

#[test]
fn every_accepted_frame_has_exactly_the_bytes_encode_writes() {
    // Fuzz-corpus style: inputs written by hand as bytes, each with what
    // the decoder must answer. What it accepts re-encodes to itself.
    let command = hex(COMMAND_EXAMPLE);
    let mut empty_values = command[..command.len() - 9].to_vec();
    empty_values.push(0x00);
    let mut padded_empty_values = command[..command.len() - 9].to_vec();
    padded_empty_values.extend_from_slice(&[0x80, 0x00]);
    let cases: Vec<(&str, Vec<u8>, Result<(), DecodeError>)> = vec![
        ("the Command example", command.clone(), Ok(())),
        ("no values", empty_values, Ok(())),
        (
            "no values, count 0 as 80 00",
            padded_empty_values,
            Err(DecodeError::Malformed),
        ),
        ("empty", vec![], Err(DecodeError::Truncated)),
        (
            "a version cut in its varint",
            hex("81"),
            Err(DecodeError::Truncated),
        ),
        (
            "version 1 as 81 00",
            hex("81 00"),
            Err(DecodeError::Malformed),
        ),
        (
            "version 1 as 81 80 00",
            hex("81 80 00"),
            Err(DecodeError::Malformed),
        ),
        (
            "a u16 version of 4 bytes",
            hex("81 80 80 00"),
            Err(DecodeError::Malformed),
        ),
        (
            "version 2",
            hex("02 ff"),
            Err(DecodeError::UnknownVersion { found: 2 }),
        ),
        (
            "seq 300 as ac 82 00",
            pad_varint(&command, 9),
            Err(DecodeError::Malformed),
        ),
        (
            "boot as b4 a4 00",
            pad_varint(&command, 7),
            Err(DecodeError::Malformed),
        ),
        (
            "seq overflowing u32",
            {
                let mut b = command[..8].to_vec();
                b.extend_from_slice(&hex("ff ff ff ff 1f"));
                b.extend_from_slice(&command[10..]);
                b
            },
            Err(DecodeError::Malformed),
        ),
        (
            "episode as 83 00, then cut",
            pad_varint(&command, 19)[..21].to_vec(),
            Err(DecodeError::Truncated),
        ),
    ];
    for (what, bytes, expected) in cases {
        let got = decode(&bytes);
        assert_eq!(got.map(|_| ()), expected, "{what}");
        if let Ok(frame) = got {
            assert_eq!(encode_to_vec(&frame), bytes, "{what}: re-encoded");
            assert_eq!(encoded_len(&frame), bytes.len(), "{what}: encoded_len");
        }
    }
}

#[test]
fn non_finite_values_are_refused_wherever_they_are() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut values = JOINTS;
        values[4] = bad;
        let state = encoded(Body::State(State {
            episode: 0,
            applied_command: 0,
            holding: false,
            estopped: false,
            values: Floats::Values(&values),
        }));
        assert_eq!(
            decode(&state),
            Err(DecodeError::NotFinite {
                field: "state.values"
            })
        );
        let command = encoded(Body::Command(Command {
            episode: 0,
            policy_version: 0,
            expires_at: 1.0,
            values: Floats::Values(&values),
        }));
        assert_eq!(
            decode(&command),
            Err(DecodeError::NotFinite {
                field: "command.values"
            })
        );
        let reward = encoded(Body::Episode(EpisodeEvent {
            episode: 0,
            applied_command: 0,
            reward: Some(bad),
            terminated: true,
            truncated: false,
            success: None,
        }));
        assert_eq!(
            decode(&reward),
            Err(DecodeError::NotFinite {
                field: "episode.reward"
            })
        );
    }
    let expiry = encoded(Body::Command(Command {
        episode: 0,
        policy_version: 0,
        expires_at: f64::NAN,
        values: Floats::Values(&JOINTS),
    }));
    assert_eq!(
        decode(&expiry),
        Err(DecodeError::NotFinite {
            field: "command.expires_at"
        })
    );
    let mut stamp = header(1);
    stamp.stamp = f64::INFINITY;
    let bytes = encode_to_vec(&Frame {
        header: stamp,
        body: Body::Heartbeat(Heartbeat {
            episode: 0,
            estopped: false,
        }),
    });
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::NotFinite {
            field: "header.stamp"
        })
    );
}

#[test]
fn out_of_range_values_are_refused() {
    let mut negative = header(1);
    negative.stamp = -1.0;
    let bytes = encode_to_vec(&Frame {
        header: negative,
        body: Body::Heartbeat(Heartbeat {
            episode: 0,
            estopped: false,
        }),
    });
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::OutOfRange {
            field: "header.stamp"
        })
    );
    // A float array of 7 bytes.
    let mut odd = state_bytes();
    let count_at = odd.len() - 4 * JOINTS.len() - 1;
    odd[count_at] = 23;
    odd.pop();
    assert_eq!(
        decode(&odd),
        Err(DecodeError::OutOfRange {
            field: "state.values"
        })
    );
    let too_many = [0.0f32; MAX_VALUES + 1];
    let big = encoded(Body::State(State {
        episode: 0,
        applied_command: 0,
        holding: false,
        estopped: false,
        values: Floats::Values(&too_many),
    }));
    assert_eq!(
        decode(&big),
        Err(DecodeError::OutOfRange {
            field: "state.values"
        })
    );
    let short_image = encoded(Body::Image(Image {
        camera: "front",
        state_seq: 0,
        taken_at: 0.0,
        height: 2,
        width: 2,
        channels: 3,
        encoding: ImageEncoding::Raw8,
        data: &[0; 11],
    }));
    assert_eq!(
        decode(&short_image),
        Err(DecodeError::OutOfRange {
            field: "image.data"
        })
    );
    let no_rate = encoded(Body::Meta(Meta {
        control_rate_hz: 0.0,
        command_timeout_s: 0.1,
        lockstep: false,
        spec_json: "{}",
    }));
    assert_eq!(
        decode(&no_rate),
        Err(DecodeError::OutOfRange {
            field: "meta.control_rate_hz"
        })
    );
}

#[test]
fn sequence_numbers_must_move_forward_until_the_sender_restarts() {
    let mut guard = SequenceGuard::default();
    assert_eq!(guard.admit(&header(10)), Ok(()));
    assert_eq!(guard.admit(&header(11)), Ok(()));
    assert_eq!(
        guard.admit(&header(11)),
        Err(DecodeError::Reordered {
            last: 11,
            found: 11
        })
    );
    assert_eq!(
        guard.admit(&header(5)),
        Err(DecodeError::Reordered { last: 11, found: 5 })
    );
    // A gap is fine (frames were lost), and the counter may wrap.
    assert_eq!(
        guard.admit(&header(u32::MAX)),
        Err(DecodeError::Reordered {
            last: 11,
            found: u32::MAX
        })
    );
    assert_eq!(guard.admit(&header(1_000)), Ok(()));
    let mut wrapping = SequenceGuard::default();
    assert_eq!(wrapping.admit(&header(u32::MAX - 1)), Ok(()));
    assert_eq!(wrapping.admit(&header(2)), Ok(()));
    // A restarted sender counts from the start again.
    let mut rebooted = header(1);
    rebooted.boot = 8;
    assert_eq!(guard.admit(&rebooted), Ok(()));
}

#[test]
fn frames_slower_than_the_fastest_by_more_than_the_limit_are_stale() {
    let mut clock = ClockOffset::default();
    // The sender's clock is 100 s behind ours; transit takes 1–3 ms.
    let at = |stamp: f64| Header { stamp, ..header(1) };
    assert_eq!(clock.admit(&at(1.0), 101.002, 0.02), Ok(()));
    assert_eq!(clock.admit(&at(1.1), 101.101, 0.02), Ok(()));
    assert!((clock.offset().unwrap() - 100.001).abs() < 1e-9);
    assert!((clock.sender_now(101.201).unwrap() - 1.2).abs() < 1e-9);
    // 50 ms slower than the best transit.
    assert_eq!(
        clock.admit(&at(1.2), 101.2515, 0.02),
        Err(DecodeError::Stale { age_ms: 50 })
    );
    // A restart with a new clock starts the estimate over.
    let mut rebooted = at(0.0);
    rebooted.boot = 8;
    assert_eq!(clock.admit(&rebooted, 300.0, 0.02), Ok(()));
    assert!((clock.offset().unwrap() - 300.0).abs() < 1e-9);
}

#[test]
fn random_bytes_never_panic_and_never_decode_to_invalid_frames() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..200), |bytes| {
            if let Ok(frame) = decode(&bytes) {
                prop_assert!(frame.validate().is_ok());
                // One encoding per frame: what decodes re-encodes to itself.
                prop_assert_eq!(encode_to_vec(&frame), bytes);
            }
            Ok(())
        })
        .unwrap();
    // Mutations of valid frames reach deeper than random bytes.
    let frames: Vec<Vec<u8>> = every_body().into_iter().map(encoded).collect();
    runner
        .run(
            &(0..frames.len(), any::<prop::sample::Index>(), any::<u8>()),
            |(which, at, byte)| {
                let mut bytes = frames[which].clone();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                if let Ok(frame) = decode(&bytes) {
                    prop_assert!(frame.validate().is_ok());
                    prop_assert_eq!(encode_to_vec(&frame), bytes);
                }
                Ok(())
            },
        )
        .unwrap();
}
