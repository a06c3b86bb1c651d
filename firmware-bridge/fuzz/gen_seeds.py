#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: for `decode`, valid frames of
every body kind, encoded by hand from docs/protocol.md (postcard: LEB128
varints, little-endian floats), independently of the Rust encoder; for
`guards`, streams of such frames in that target's record layout.

    python3 gen_seeds.py    # writes corpus/decode/seed-*.bin, corpus/guards/seed-*.bin
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "decode")
OUT_GUARDS = os.path.join(HERE, "corpus", "guards")


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def u8(n):
    return bytes([n])


def boolean(b):
    return b"\x01" if b else b"\x00"


def f32(x):
    return struct.pack("<f", x)


def f64(x):
    return struct.pack("<d", x)


def string(s):
    data = s.encode("utf-8")
    return varint(len(data)) + data


def raw(data):
    return varint(len(data)) + bytes(data)


def floats(values):
    return varint(4 * len(values)) + b"".join(f32(v) for v in values)


def option(value, encode):
    return b"\x00" if value is None else b"\x01" + encode(value)


def header(robot="arm0", boot=7, seq=5, stamp=1.5, protocol=1):
    return varint(protocol) + string(robot) + varint(boot) + varint(seq) + f64(stamp)


def state(episode, applied, holding, estopped, values):
    return varint(0) + varint(episode) + varint(applied) + boolean(holding) + boolean(estopped) + floats(values)


def image(camera, state_seq, taken_at, height, width, channels, data):
    return (varint(1) + string(camera) + varint(state_seq) + f64(taken_at) + varint(height)
            + varint(width) + u8(channels) + varint(0) + raw(data))


def command(episode, policy_version, expires_at, values):
    return varint(2) + varint(episode) + varint(policy_version) + f64(expires_at) + floats(values)


def reset(episode, seed):
    return varint(3) + varint(episode) + varint(seed)


def reset_ack(episode, seed, task_instance, instruction):
    return varint(4) + varint(episode) + varint(seed) + varint(task_instance) + string(instruction)


def episode_event(episode, applied, reward, terminated, truncated, success):
    return (varint(5) + varint(episode) + varint(applied) + option(reward, f32)
            + boolean(terminated) + boolean(truncated) + option(success, boolean))


def teleop(phase, values):
    return varint(6) + varint(phase) + floats(values)


def estop(engaged, reason):
    return varint(7) + boolean(engaged) + string(reason)


def heartbeat(episode, estopped):
    return varint(8) + varint(episode) + boolean(estopped)


def meta(rate, timeout, lockstep, spec_json):
    return varint(9) + f32(rate) + f32(timeout) + boolean(lockstep) + string(spec_json)


JOINTS = [0.1, -0.2, 0.3, 0.0, 1.0, 0.5]
SPEC = ('{"name":"arm2","observation":{"fields":[{"name":"joint_position","unit":"radian",'
        '"elements":["shoulder","elbow"],"lower":[-3.0,-2.5],"upper":[3.0,2.5]}],"cameras":[],'
        '"instruction":false},"action":{"fields":[{"name":"joint_target","unit":"radian",'
        '"elements":["shoulder","elbow"],"lower":[-3.0,-2.5],"upper":[3.0,2.5]}]},"control_rate_hz":50.0}')

H = header()
SEEDS = {
    # every_body() in firmware-bridge/src/protocol/tests.rs, header(5).
    "state": H + state(3, 41, True, False, JOINTS),
    "image": H + image("wrist", 9, 1.25, 2, 2, 3, range(1, 13)),
    "command": H + command(3, 12, 1.6, JOINTS),
    "reset": H + reset(4, 2**64 - 1),
    "reset_ack": H + reset_ack(4, 99, 5, "reach the red dot"),
    "episode": H + episode_event(4, 8, -0.25, False, True, False),
    "teleop": H + teleop(0, JOINTS),
    "estop": H + estop(True, "operator"),
    "heartbeat": H + heartbeat(2, True),
    "meta": H + meta(50.0, 0.1, False, "{}"),
    # The worked examples in docs/protocol.md.
    "doc_state": header(seq=1) + state(3, 41, False, False, JOINTS),
    "doc_command": header(boot=0x1234, seq=300, stamp=2.0) + command(3, 12, 2.06, [0.1, -0.2]),
    # Other shapes: multi-byte and maximal varints, empty and long fields,
    # other enum variants and options.
    "state_empty": header(robot="", boot=0, seq=0, stamp=0.0) + state(0, 0, False, True, []),
    "state_max_values": header(boot=2**32 - 1, seq=2**32 - 1) + state(2**32 - 1, 2**32 - 1, True, True, [0.25] * 256),
    "image_gray": header(robot="so101") + image("front", 300, 0.0, 4, 8, 1, bytes(32)),
    "image_rgba": header() + image("side", 1, 1e6, 3, 1, 4, range(12)),
    "command_max": header(seq=128) + command(2**32 - 1, 2**64 - 1, 1e9, [-1.0, 1.0, 3.5]),
    "reset_ack_empty": header() + reset_ack(0, 0, 0, ""),
    "episode_none": header() + episode_event(1, 0, None, True, False, None),
    "episode_success": header() + episode_event(1, 2, 1.0, True, False, True),
    "teleop_command": header() + teleop(1, [0.5, -0.5]),
    "teleop_end": header() + teleop(2, []),
    "estop_clear": header(robot="r\u00e9bot") + estop(False, ""),
    "meta_spec": header() + meta(100000.0, 0.25, True, SPEC),
}


def record(frame, delay_ms=2, jitter_us=0, raw_now=None):
    """One record of the `guards` target: len, 9 clock bytes, the frame."""
    assert len(frame) <= 255
    if raw_now is None:
        clock = b"\x00" + struct.pack("<Hh", delay_ms, jitter_us) + bytes(4)
    else:
        clock = b"\x01" + f64(raw_now)
    return u8(len(frame)) + clock + frame


def guard_streams():
    beat = heartbeat(1, False)
    body = state(1, 0, False, False, JOINTS)
    return {
        # In order, steady transit.
        "in_order": b"".join(record(header(seq=s, stamp=1.0 + 0.02 * s) + body) for s in range(1, 9)),
        # Duplicates, reordering, a late frame, a reboot, a wrapping counter.
        "mixed": b"".join([
            record(header(seq=10, stamp=1.0) + beat),
            record(header(seq=10, stamp=1.0) + beat),
            record(header(seq=9, stamp=0.99) + beat),
            record(header(seq=11, stamp=1.1) + beat, delay_ms=200),
            record(header(boot=8, seq=2**32 - 2, stamp=0.0) + beat),
            record(header(boot=8, seq=1, stamp=0.1) + beat, jitter_us=-1000),
            record(header(boot=8, seq=2**31 + 1, stamp=0.2) + beat),
        ]),
        # Receive times that are not sane numbers.
        "raw_clock": b"".join([
            record(header(seq=1, stamp=5.0) + beat, raw_now=0.0),
            record(header(seq=2, stamp=5.1) + beat, raw_now=float("nan")),
            record(header(seq=3, stamp=5.2) + beat, raw_now=float("inf")),
            record(header(seq=4, stamp=5.3) + beat, raw_now=-1e308),
            record(header(seq=5, stamp=1e308) + beat, raw_now=1e308),
        ]),
        # Every body kind in one stream.
        "every_kind": b"".join(
            record(data) for name, data in SEEDS.items() if len(data) <= 255
        ),
    }


def write(directory, seeds):
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(directory, f"seed-{name}.bin"), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {directory}")


def main():
    write(OUT, SEEDS)
    write(OUT_GUARDS, guard_streams())


if __name__ == "__main__":
    main()
