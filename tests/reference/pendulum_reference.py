#!/usr/bin/env python3
"""Reference trajectories for Cerebellum's Pendulum (sim/src/pendulum.rs).

Writes sim/tests/fixtures/pendulum_reference.json, which the Rust unit tests
replay step by step.

The dynamics below reproduce gymnasium's ``PendulumEnv.step`` (Pendulum-v1)
with numpy float64, operation for operation and in the same order, so that the
Rust port (also f64) can be held to a tight tolerance:

    u        = clip(u, -2, 2)
    cost     = angle_normalize(th)**2 + 0.1 * thdot**2 + 0.001 * u**2
    newthdot = clip(thdot + (3 g / (2 l) * sin(th) + 3 / (m l**2) * u) * dt, -8, 8)
    newth    = th + newthdot * dt
    reward   = -cost
    obs      = float32([cos(newth), sin(newth), newthdot])

with g = 10, m = 1, l = 1, dt = 0.05 and ``angle_normalize(x) = ((x + pi) %
(2 pi)) - pi`` (numpy's ``%``, whose result takes the sign of the divisor).
Gymnasium itself is not needed to regenerate the fixture: only numpy.

Actions are handed to the dynamics as float64. This matters: gymnasium's
action space is float32, and under numpy 2's promotion rules (NEP 50) a
float32 ``u`` makes ``3.0 / (m * l**2) * u`` and ``0.001 * u**2`` float32
expressions. Measured on these cases with the same float32-representable
actions, float32 versus float64 dtype alone moves the state by up to 2.5e-6
and the reward by up to 7e-6 within 200 steps (the pumping case; the errors
grow with the swing). Cerebellum's step takes an f64 torque, so the float64
path is the one to match.

Cross-check against the real environment (run when gymnasium is importable):
every case is replayed through ``gymnasium.make("Pendulum-v1")`` with
``env.unwrapped.state`` set directly after ``reset`` and float64 actions; the
observations and rewards must be bit-identical to the reimplementation, and
the TimeLimit wrapper must truncate on exactly step 200. Result when this
fixture was generated (numpy 2.4.6, gymnasium 1.4.0, Python 3.11): all cases
bit-identical, truncation on step 200 only.

Usage: python3 tests/reference/pendulum_reference.py
"""

import json
import math
from pathlib import Path

import numpy as np

GRAVITY = 10.0
MASS = 1.0
LENGTH = 1.0
DT = 0.05
MAX_TORQUE = 2.0
MAX_SPEED = 8.0
HORIZON = 200

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PATH = REPO_ROOT / "sim" / "tests" / "fixtures" / "pendulum_reference.json"


def angle_normalize(x):
    return ((x + np.pi) % (2 * np.pi)) - np.pi


def observe(state):
    theta, theta_dot = state
    return np.array([np.cos(theta), np.sin(theta), theta_dot], dtype=np.float32)


def step(state, action):
    """One gymnasium Pendulum-v1 step; returns (new_state, reward)."""
    th, thdot = state
    g, m, l, dt = GRAVITY, MASS, LENGTH, DT

    u = np.clip(np.array([action], dtype=np.float64), -MAX_TORQUE, MAX_TORQUE)[0]
    costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)

    newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l**2) * u) * dt
    newthdot = np.clip(newthdot, -MAX_SPEED, MAX_SPEED)
    newth = th + newthdot * dt

    return np.array([newth, newthdot]), -costs


def rollout(theta0, theta_dot0, actions):
    state = np.array([theta0, theta_dot0], dtype=np.float64)
    initial_observation = observe(state)
    observations, rewards = [], []
    for action in actions:
        state, reward = step(state, action)
        observations.append(observe(state))
        rewards.append(float(reward))
    return initial_observation, observations, rewards


def cases():
    """Three starts chosen to cover the interesting branches.

    - pumping from near the bottom with a sinusoid that overshoots the torque
      limit, so clipping is active on part of every period;
    - seeded uniform noise in [-3, 3], starting past the +-pi seam of
      angle_normalize;
    - a constant over-limit torque that spins the pendulum up until the speed
      clip holds it at exactly max_speed.
    """
    pumping = [2.6 * math.sin(0.15 * k) for k in range(HORIZON)]
    noise = np.random.default_rng(20240917).uniform(-3.0, 3.0, HORIZON).tolist()
    spin = [4.0] * HORIZON
    return [
        ("pumping_from_bottom", 3.0, 0.0, pumping),
        ("seeded_noise", -3.1, 0.7, noise),
        ("spin_to_speed_limit", 0.5, -0.9, spin),
    ]


def cross_check_with_gymnasium(generated):
    try:
        import gymnasium
    except ImportError:
        print("gymnasium not importable: skipping the cross-check")
        return

    for case in generated:
        env = gymnasium.make("Pendulum-v1")
        env.reset(seed=0)
        env.unwrapped.state = np.array([case["theta0"], case["theta_dot0"]], dtype=np.float64)
        for index, action in enumerate(case["actions"]):
            observation, reward, terminated, truncated, _ = env.step(
                np.array([action], dtype=np.float64)
            )
            step_number = index + 1
            expected = np.array(case["observations"][index], dtype=np.float32)
            if not np.array_equal(observation, expected):
                raise SystemExit(f"{case['name']}: observation differs on step {step_number}")
            if float(reward) != case["rewards"][index]:
                raise SystemExit(f"{case['name']}: reward differs on step {step_number}")
            if terminated or truncated != (step_number == HORIZON):
                raise SystemExit(f"{case['name']}: episode flags wrong on step {step_number}")
        env.close()
    print(f"gymnasium {gymnasium.__version__}: all cases bit-identical, truncated on step {HORIZON}")


def main():
    generated = []
    for name, theta0, theta_dot0, actions in cases():
        initial_observation, observations, rewards = rollout(theta0, theta_dot0, actions)
        generated.append(
            {
                "name": name,
                "theta0": theta0,
                "theta_dot0": theta_dot0,
                "actions": actions,
                "initial_observation": [float(x) for x in initial_observation],
                "observations": [[float(x) for x in obs] for obs in observations],
                "rewards": rewards,
            }
        )

    clipped = sum(abs(a) > MAX_TORQUE for case in generated for a in case["actions"])
    at_speed_limit = sum(
        abs(obs[2]) == MAX_SPEED for case in generated for obs in case["observations"]
    )
    assert clipped > 0, "no action exercises the torque clip"
    assert at_speed_limit > 0, "no step reaches the speed clip"

    cross_check_with_gymnasium(generated)

    fixture = {
        "generator": "tests/reference/pendulum_reference.py",
        "environment": "gymnasium Pendulum-v1, reimplemented in numpy float64",
        "numpy_version": np.__version__,
        "cases": generated,
    }
    FIXTURE_PATH.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE_PATH.write_text(json.dumps(fixture, indent=1) + "\n")
    print(
        f"wrote {FIXTURE_PATH.relative_to(REPO_ROOT)}: {len(generated)} cases, "
        f"{clipped} over-limit actions, {at_speed_limit} steps at the speed limit"
    )


if __name__ == "__main__":
    main()
