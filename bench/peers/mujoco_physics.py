#!/usr/bin/env python3
"""MuJoCo peer for `cerebellum bench physics`.

Why this exists: Cerebellum steps robot arms in rapier3d. A steps-per-second
number means little on its own, so the Rust benchmark runs this script in the
same session, on the same machine, against the same MJCF scene, and prints the
ratio. MuJoCo is the reference engine most robot-learning stacks use, which
makes it the natural yardstick. This script is benchmark tooling only; it is
never part of the product.

What it measures, so the Rust side can do the same thing:
  1. Load the scene given by --scene and set model.opt.timestep = --dt.
     Everything else (integrator, solver, contacts) stays as the MJCF says.
  2. Start from the home pose: the model's qpos0 (all joints 0 for the SO-101),
     zero velocity.
  3. Command every position actuator to a fixed target, the same every run:
         target[i] = mid[i] + TARGET_OFFSET_FRACTION[i] * half[i]
     where mid/half are the centre and half-width of actuator i's ctrlrange,
     in the model's actuator order. The target is clipped to ctrlrange.
  4. Run --warmup steps untimed, then time --steps calls of mujoco.mj_step
     with time.perf_counter, on one thread (MuJoCo's default; no thread pool
     is attached). The Python call overhead per step is part of the number,
     as the Rust side also pays one call per step.
  5. Report the max |qpos - ctrl| over the actuated joints at the end, so the
     position controllers' tracking can be compared between engines.

With --track-report it also runs a separate 2 s episode (at --dt) from the
home pose to the target and prints per-joint errors. That run is untimed.

Exit codes: 0 ok, 2 bad arguments or unloadable scene, 3 mujoco not installed
(the Rust bench reads 3 as "peer not installed").
"""

import argparse
import fractions
import json
import sys
import time

REQUIREMENTS = "bench/peers/requirements-mujoco.txt"

# Offset of the target from the middle of each actuator's ctrlrange, as a
# fraction of the half-range, in actuator order. Alternating signs give a pose
# that bends every joint without touching the floor or itself. For the SO-101
# (shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll, gripper)
# this is about [0.480, -0.436, 0.423, 0.415, 0.747, 0.545] rad.
# Models with more actuators reuse the pattern cyclically.
TARGET_OFFSET_FRACTION = (0.25, -0.25, 0.25, 0.25, 0.25, -0.25)

TRACK_SECONDS = 2.0


def import_mujoco():
    try:
        import mujoco  # noqa: PLC0415 - imported late so we can exit with code 3
    except ImportError as err:
        print(
            f"error: the MuJoCo peer needs the 'mujoco' Python package ({err}).\n"
            f"Install it with:  pip install -r {REQUIREMENTS}",
            file=sys.stderr,
        )
        sys.exit(3)
    return mujoco


def parse_seconds(text):
    """A timestep as a decimal or a fraction: '0.005' or '1/240'."""
    try:
        return float(fractions.Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time MuJoCo's mj_step on an MJCF scene, as a peer for "
        "`cerebellum bench physics`. Benchmark tooling only.",
        epilog="Exit codes: 0 ok, 2 bad arguments / unloadable scene, "
        f"3 mujoco not installed (pip install -r {REQUIREMENTS}).",
    )
    p.add_argument("--scene", required=True, help="path to the MJCF scene.xml")
    p.add_argument("--dt", type=parse_seconds, required=True, help="physics timestep in seconds, e.g. 0.005 or 1/240")
    p.add_argument("--steps", type=int, default=20000, help="number of timed steps (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1000, help="untimed steps before timing (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument(
        "--track-report",
        action="store_true",
        help=f"also run {TRACK_SECONDS:g} s from the home pose to the target and print per-joint errors",
    )
    args = p.parse_args(argv)
    if not args.dt > 0:
        p.error("--dt must be > 0")
    if args.steps < 1:
        p.error("--steps must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def actuated_joints(mujoco, model):
    """For each actuator (model order): (actuator name, qpos address)."""
    out = []
    for i in range(model.nu):
        if int(model.actuator_trntype[i]) != int(mujoco.mjtTrn.mjTRN_JOINT):
            raise ValueError(f"actuator {model.actuator(i).name!r} does not drive a joint")
        joint = model.actuator_trnid[i, 0]
        if int(model.jnt_type[joint]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
            raise ValueError(f"actuator {model.actuator(i).name!r} drives a non-scalar joint")
        out.append((model.actuator(i).name, int(model.jnt_qposadr[joint])))
    return out


def target_pose(model):
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    target = []
    for i in range(model.nu):
        frac = TARGET_OFFSET_FRACTION[i % len(TARGET_OFFSET_FRACTION)]
        mid, half = (lo[i] + hi[i]) / 2, (hi[i] - lo[i]) / 2
        target.append(min(max(mid + frac * half, lo[i]), hi[i]))
    return target


def reset_to_home(mujoco, model, data, target):
    mujoco.mj_resetData(model, data)  # qpos = qpos0, qvel = 0, time = 0
    data.ctrl[:] = target
    mujoco.mj_forward(model, data)


def tracking_errors(data, joints):
    return [float(data.qpos[adr] - data.ctrl[i]) for i, (_, adr) in enumerate(joints)]


def track_report(mujoco, model, data, joints, target):
    reset_to_home(mujoco, model, data, target)
    n = round(TRACK_SECONDS / model.opt.timestep)
    for _ in range(n):
        mujoco.mj_step(model, data)
    errs = tracking_errors(data, joints)
    print(f"track report: {n} steps ({n * model.opt.timestep:g} s) from home to target")
    for (name, adr), tgt, err in zip(joints, target, errs):
        print(f"  {name:>16}  target {tgt:+.5f}  qpos {data.qpos[adr]:+.5f}  error {err:+.3e} rad")
    return {
        "seconds_simulated": n * model.opt.timestep,
        "joints": [name for name, _ in joints],
        "error": errs,
        "max_abs_error": max((abs(e) for e in errs), default=0.0),
    }


def main(argv=None):
    args = parse_args(argv)
    mujoco = import_mujoco()

    try:
        model = mujoco.MjModel.from_xml_path(args.scene)
    except (ValueError, OSError) as err:
        print(f"error: cannot load scene {args.scene!r}: {err}", file=sys.stderr)
        return 2
    model.opt.timestep = args.dt
    data = mujoco.MjData(model)
    try:
        joints = actuated_joints(mujoco, model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = target_pose(model)

    print(f"mujoco {mujoco.__version__}  scene {args.scene}")
    print(f"nq {model.nq}  nv {model.nv}  nu {model.nu}  dt {args.dt:g}  warmup {args.warmup}  steps {args.steps}")
    print("target " + "  ".join(f"{name}={t:+.4f}" for (name, _), t in zip(joints, target)))

    track = track_report(mujoco, model, data, joints, target) if args.track_report else None

    reset_to_home(mujoco, model, data, target)
    step = mujoco.mj_step
    for _ in range(args.warmup):
        step(model, data)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(model, data)
    elapsed = time.perf_counter() - t0

    sps = args.steps / elapsed
    errs = tracking_errors(data, joints)
    max_err = max((abs(e) for e in errs), default=0.0)
    print(f"{args.steps} steps in {elapsed:.4f} s: {sps:,.0f} steps/s, {1e6 / sps:.2f} us/step, "
          f"{sps * args.dt:,.0f}x real time")
    print(f"max |qpos - ctrl| after the timed run: {max_err:.3e} rad")

    if args.json:
        result = {
            "engine": "mujoco",
            "version": mujoco.__version__,
            "dt": args.dt,
            "steps": args.steps,
            "warmup": args.warmup,
            "seconds": elapsed,
            "steps_per_second": sps,
            "nq": model.nq,
            "nu": model.nu,
            "target": target,
            "final_qpos": [float(q) for q in data.qpos],
            "max_abs_tracking_error": max_err,
        }
        if track is not None:
            result["track_report"] = track
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
