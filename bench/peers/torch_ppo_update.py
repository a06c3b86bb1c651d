#!/usr/bin/env python3
"""Plain-PyTorch PPO update peer for `cerebellum bench train`.

Why this exists: the end-to-end peers (sb3_ppo_pendulum.py,
cleanrl_ppo_pendulum.py) mix environment stepping, rollout bookkeeping and the
learner. This one isolates the learner: it times ONE PPO update (all epochs
over one batch) in plain PyTorch, so Cerebellum's update can be compared with
the most direct PyTorch equivalent on the same machine, in the same run.
Benchmark tooling only; never part of the product.

The update, so the Rust side can do the same thing:
  * actor: obs -> H -> tanh -> H -> tanh -> act_dim (Gaussian mean) plus a
    learned state-independent log-std; critic: a separate obs -> H -> tanh ->
    H -> tanh -> 1. One Adam (lr 3e-4, eps 1e-5) over all parameters.
  * data: --samples random transitions (obs ~ N(0,1), actions sampled from the
    initial policy, their log-probs, values from the initial critic,
    advantages and returns ~ N(0,1)). Random data is enough: the cost of an
    update does not depend on what the numbers are.
  * --epochs passes; each pass shuffles the batch and steps through it in
    minibatches of --minibatch (the last one smaller if it does not divide).
    Per minibatch: advantage normalisation, clipped surrogate (clip 0.2),
    value loss 0.5*(V - R)^2 weighted 0.5, entropy bonus weighted 0.01,
    backward, global grad-norm clip 0.5, Adam step. The Gaussian is built
    with validate_args=False, so the time is the update, not debug checks.
  * warm-up: --warmup full updates first (allocator, autograd and kernel
    caches), then --repeats timed updates on fresh copies of the initial
    networks and optimiser; the median is reported.

Reported: wall_s (one update), minibatch_steps (optimizer steps in one
update), samples_per_s = samples / wall_s (rollout samples one update consumes
per second: comparable with env steps/s) and sample_passes_per_s =
samples * epochs / wall_s (per-sample forward+backward passes per second).

One CPU thread (torch intra- and inter-op, OpenMP, MKL).

Exit codes: 0 ok, 2 bad arguments, 3 torch not installed (the Rust bench
reads 3 as "peer not installed").
"""

import os

# Pin every thread pool to one thread *before* torch is imported: the
# BLAS/OpenMP pools read these variables once, at load time.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

REQUIREMENTS = "bench/peers/requirements-torch.txt"

LR = 3e-4
ADAM_EPS = 1e-5
CLIP = 0.2
VF_COEF = 0.5
ENT_COEF = 0.01
MAX_GRAD_NORM = 0.5


def import_torch():
    try:
        import torch  # noqa: PLC0415 - imported late so we can exit with code 3
    except ImportError as err:
        print(
            f"error: the PyTorch PPO-update peer needs the 'torch' package ({err}).\n"
            f"Install it with:  pip install -r {REQUIREMENTS}",
            file=sys.stderr,
        )
        sys.exit(3)
    return torch


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time one PPO update (all epochs over one batch) in plain PyTorch, "
        "as a peer for `cerebellum bench train`. Benchmark tooling only.",
        epilog="The last line of stdout is one JSON object. Exit codes: 0 ok, 2 bad "
        f"arguments, 3 torch not installed (pip install -r {REQUIREMENTS}).",
    )
    p.add_argument("--samples", type=int, default=4096, help="transitions in the batch (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the batch (default: %(default)s)")
    p.add_argument("--minibatch", type=int, default=64, help="minibatch size (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=64, help="hidden width H of both MLPs (default: %(default)s)")
    p.add_argument("--obs-dim", type=int, default=3, help="observation size (default: %(default)s)")
    p.add_argument("--act-dim", type=int, default=1, help="action size (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed updates first (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed updates; the median is reported (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for the data and weights (default: %(default)s)")
    args = p.parse_args(argv)
    for name in ("samples", "epochs", "minibatch", "hidden", "obs_dim", "act_dim", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def build_nets(torch, args):
    nn = torch.nn
    h = args.hidden

    def mlp(n_out, out_gain):
        # Orthogonal init as in common PPO implementations; it does not change
        # the cost, only keeps the losses finite and the run representative.
        layers = [nn.Linear(args.obs_dim, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, n_out)]
        for lin, gain in zip(layers[::2], (math.sqrt(2), math.sqrt(2), out_gain)):
            nn.init.orthogonal_(lin.weight, gain)
            nn.init.zeros_(lin.bias)
        return nn.Sequential(*layers)

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.actor = mlp(args.act_dim, 0.01)
            self.log_std = nn.Parameter(torch.zeros(args.act_dim))
            self.critic = mlp(1, 1.0)

        def forward(self, obs, actions):
            mean = self.actor(obs)
            # validate_args=False: skip the argument checks torch.distributions
            # runs on every construction (a debugging aid, about a quarter of
            # the update time at these sizes); the numbers are unchanged.
            dist = torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)
            return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1), self.critic(obs).squeeze(-1)

    return ActorCritic()


def make_batch(torch, net, args):
    g = torch.Generator().manual_seed(args.seed)
    obs = torch.randn(args.samples, args.obs_dim, generator=g)
    with torch.no_grad():
        mean = net.actor(obs)
        actions = mean + net.log_std.exp() * torch.randn(mean.shape, generator=g)
        logp, _, values = net(obs, actions)
    return {
        "obs": obs,
        "actions": actions,
        "logp": logp,
        "values": values,
        "advantages": torch.randn(args.samples, generator=g),
        "returns": torch.randn(args.samples, generator=g),
    }


def ppo_update(torch, net, opt, batch, args, gen):
    """One PPO update; returns the number of optimizer steps taken."""
    n, steps = args.samples, 0
    for _ in range(args.epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, args.minibatch):
            mb = perm[start:start + args.minibatch]
            logp, entropy, values = net(batch["obs"][mb], batch["actions"][mb])

            adv = batch["advantages"][mb]
            if adv.numel() > 1:  # std of one element is undefined
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            ratio = (logp - batch["logp"][mb]).exp()
            pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - CLIP, 1 + CLIP)).mean()
            v_loss = 0.5 * ((values - batch["returns"][mb]) ** 2).mean()
            loss = pg_loss + VF_COEF * v_loss - ENT_COEF * entropy.mean()

            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_GRAD_NORM)
            opt.step()
            steps += 1
    return steps


def main(argv=None):
    args = parse_args(argv)
    torch = import_torch()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; harmless if too late
        pass
    torch.manual_seed(args.seed)

    initial = build_nets(torch, args)
    batch = make_batch(torch, initial, args)

    def fresh():
        # Every update (warm-up or timed) starts from the same weights and a
        # fresh Adam, so the repeats measure the same work.
        net = copy.deepcopy(initial)
        return net, torch.optim.Adam(net.parameters(), lr=LR, eps=ADAM_EPS)

    print(f"torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"samples {args.samples}  epochs {args.epochs}  minibatch {args.minibatch}  hidden {args.hidden}  "
          f"obs {args.obs_dim}  act {args.act_dim}  warmup {args.warmup}  repeats {args.repeats}")

    gen = torch.Generator().manual_seed(args.seed + 1)
    for _ in range(args.warmup):
        net, opt = fresh()
        ppo_update(torch, net, opt, batch, args, gen)

    walls, mb_steps = [], 0
    for _ in range(args.repeats):
        net, opt = fresh()
        t0 = time.perf_counter()
        mb_steps = ppo_update(torch, net, opt, batch, args, gen)
        walls.append(time.perf_counter() - t0)
        print(f"  update: {walls[-1] * 1e3:.1f} ms")

    wall = statistics.median(walls)
    sps = args.samples / wall
    passes = args.samples * args.epochs / wall
    print(f"one update: {wall * 1e3:.1f} ms (median of {args.repeats}), {mb_steps} minibatch steps, "
          f"{wall / mb_steps * 1e6:.1f} us/step, {sps:,.0f} samples/s, {passes:,.0f} sample passes/s")
    print(json.dumps({
        "peer": "pytorch",
        "samples_per_s": sps,
        "wall_s": wall,
        "minibatch_steps": mb_steps,
        "sample_passes_per_s": passes,
        "wall_s_all": walls,
        "config": {k: getattr(args, k) for k in ("samples", "epochs", "minibatch", "hidden", "obs_dim", "act_dim")},
        "torch": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
