#!/usr/bin/env python3
"""Stable-Baselines3 PPO peer for `cerebellum bench train` (Pendulum-v1).

Why this exists: Cerebellum trains policies with its own PPO. "It solved
Pendulum in N env steps and T seconds" means little on its own, so the Rust
benchmark runs this script in the same session, on the same machine, and
prints the ratio. SB3 with the rl-baselines3-zoo tuned hyperparameters is the
reference most people would reach for. This script is benchmark tooling only;
it is never part of the product.

What it does, so the Rust side can do the same thing:
  1. Train SB3 PPO on gymnasium's Pendulum-v1 with the rl-baselines3-zoo
     hyperparameters for Pendulum-v1 (hyperparams/ppo.yml, entry "Tuned
     Pendulum-v1"; see ZOO_PENDULUM below). Everything not listed there is the
     SB3 default (batch_size 64, vf_coef 0.5, max_grad_norm 0.5, MlpPolicy
     64-64 tanh, no observation/reward normalisation), as in the zoo.
  2. Every --eval-every env steps (counted over all 4 envs, like SB3's
     num_timesteps), pause training and run a deterministic evaluation
     (action = policy mean) of --eval-episodes full episodes on a separate
     Pendulum-v1. Evaluation episode i always starts from reset(seed=EVAL_SEED
     + i), so every evaluation in a run, and every peer, sees the same 10
     start states. The score is the mean undiscounted episode return.
  3. Stop as soon as an evaluation's mean return is >= --target, or when
     --max-steps env steps have been collected (then evaluate once more if the
     last evaluation was not at that step).
  4. Wall time spent in evaluation is measured separately and subtracted from
     the training wall time; both are reported.

Everything runs on one CPU thread (torch, OpenMP, MKL), so the comparison
with Cerebellum is one thread against one thread.

Exit codes: 0 ok (whether or not the target was reached: see "reached"),
2 bad arguments, 3 torch / stable-baselines3 / gymnasium not installed (the
Rust bench reads 3 as "peer not installed").
"""

import os

# Pin every thread pool to one thread *before* numpy/torch are imported: the
# BLAS/OpenMP pools read these variables once, at load time.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

REQUIREMENTS = "bench/peers/requirements-sb3.txt"
ENV_ID = "Pendulum-v1"

# Start states of evaluation episode i are reset(seed=EVAL_SEED + i), the same
# for every evaluation and every seed, so evaluations are comparable.
EVAL_SEED = 1_000_000

# rl-baselines3-zoo hyperparams/ppo.yml, "# Tuned / Pendulum-v1" (checked
# against the zoo's master ppo.yml). n_timesteps (1e5) is the zoo's budget;
# here the budget is --max-steps instead.
ZOO_PENDULUM = dict(
    n_envs=4,
    policy="MlpPolicy",
    n_steps=1024,
    gae_lambda=0.95,
    gamma=0.9,
    n_epochs=10,
    ent_coef=0.0,
    learning_rate=1e-3,
    clip_range=0.2,
    use_sde=True,
    sde_sample_freq=4,
)


def import_deps():
    try:
        # Imported late so a missing package gives exit code 3, not a traceback.
        import gymnasium  # noqa: PLC0415
        import numpy  # noqa: PLC0415
        import stable_baselines3  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as err:
        print(
            f"error: the SB3 peer needs torch, stable-baselines3 and gymnasium ({err}).\n"
            f"Install them with:  pip install -r {REQUIREMENTS}",
            file=sys.stderr,
        )
        sys.exit(3)
    return gymnasium, numpy, stable_baselines3, torch


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train Stable-Baselines3 PPO (rl-baselines3-zoo hyperparameters) on "
        "Pendulum-v1 until a deterministic evaluation reaches --target, as a peer for "
        "`cerebellum bench train`. Benchmark tooling only.",
        epilog="The last line of stdout is one JSON object. Exit codes: 0 ok, 2 bad "
        f"arguments, 3 a dependency is missing (pip install -r {REQUIREMENTS}).",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--target", type=float, default=-200.0,
                   help="stop when the mean evaluation return is >= this (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=10_000,
                   help="evaluate every this many env steps, summed over envs (default: %(default)s)")
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="episodes per evaluation (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=200_000,
                   help="give up after this many env steps (default: %(default)s)")
    args = p.parse_args(argv)
    if args.eval_every < 1:
        p.error("--eval-every must be >= 1")
    if args.eval_episodes < 1:
        p.error("--eval-episodes must be >= 1")
    if args.max_steps < 1:
        p.error("--max-steps must be >= 1")
    return args


def evaluate(model, eval_env, episodes):
    """Mean undiscounted return of `episodes` deterministic episodes."""
    returns = []
    for i in range(episodes):
        obs, _ = eval_env.reset(seed=EVAL_SEED + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return sum(returns) / len(returns)


def main(argv=None):
    args = parse_args(argv)
    gym, np, sb3, torch = import_deps()
    from stable_baselines3.common.callbacks import BaseCallback  # noqa: PLC0415
    from stable_baselines3.common.env_util import make_vec_env  # noqa: PLC0415

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; harmless if too late
        pass

    class EvalAndStop(BaseCallback):
        """Evaluates every `eval_every` env steps with the training clock paused.

        SB3 calls _on_step after every vectorised env step, with num_timesteps
        already advanced by n_envs. Returning False stops learn() at once.
        """

        def __init__(self):
            super().__init__()
            self.next_eval = args.eval_every
            self.curve = []
            self.eval_wall = 0.0
            self.reached = False
            self.reached_at = None

        def run_eval(self):
            t0 = time.perf_counter()
            ret = evaluate(self.model, eval_env, args.eval_episodes)
            self.eval_wall += time.perf_counter() - t0
            steps = self.num_timesteps
            self.curve.append([steps, ret])
            print(f"  steps {steps:>7}  eval return {ret:9.2f}", flush=True)
            if ret >= args.target and not self.reached:
                self.reached, self.reached_at = True, steps
            return ret

        def _on_step(self):
            if self.num_timesteps >= self.next_eval:
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += args.eval_every
                self.run_eval()
                if self.reached:
                    return False
            # learn() only checks its budget between rollouts, so it would
            # overshoot --max-steps by up to n_envs*n_steps; stop exactly here.
            return self.num_timesteps < args.max_steps

    hp = dict(ZOO_PENDULUM)
    n_envs = hp.pop("n_envs")
    policy = hp.pop("policy")
    # make_vec_env gives a DummyVecEnv of Monitor-wrapped envs, as the zoo
    # uses; env i is seeded with seed + i.
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=args.seed)
    eval_env = gym.make(ENV_ID)
    model = sb3.PPO(policy, env, seed=args.seed, device="cpu", verbose=0, **hp)

    print(f"stable-baselines3 {sb3.__version__}  torch {torch.__version__}  gymnasium {gym.__version__}")
    print(f"{ENV_ID}  seed {args.seed}  target {args.target:g}  eval every {args.eval_every} steps "
          f"x {args.eval_episodes} episodes  max {args.max_steps} steps  threads {torch.get_num_threads()}")
    print("zoo hyperparameters: " + ", ".join(f"{k}={v}" for k, v in ZOO_PENDULUM.items()))

    cb = EvalAndStop()
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.max_steps, callback=cb)
    total_wall = time.perf_counter() - t0

    # If the budget ran out between evaluations, score the final policy too.
    if not cb.reached and (not cb.curve or cb.curve[-1][0] != model.num_timesteps):
        cb.run_eval()
    train_wall = total_wall - cb.eval_wall  # the final evaluation above is outside total_wall
    env_steps = cb.reached_at if cb.reached else model.num_timesteps

    verdict = f"reached {args.target:g} at {env_steps} steps" if cb.reached else \
        f"did not reach {args.target:g} in {env_steps} steps"
    print(f"{verdict}: train {train_wall:.2f} s ({env_steps / train_wall:,.0f} steps/s), "
          f"eval {cb.eval_wall:.2f} s, final eval return {cb.curve[-1][1]:.2f}")

    env.close()
    eval_env.close()
    print(json.dumps({
        "peer": "sb3",
        "seed": args.seed,
        "reached": cb.reached,
        "env_steps": env_steps,
        "train_wall_s": train_wall,
        "eval_wall_s": cb.eval_wall,
        "final_eval_return": cb.curve[-1][1],
        "curve": cb.curve,
        "target": args.target,
        "versions": {"stable_baselines3": sb3.__version__, "torch": torch.__version__,
                     "gymnasium": gym.__version__, "numpy": np.__version__},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
