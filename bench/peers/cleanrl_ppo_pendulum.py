#!/usr/bin/env python3
"""CleanRL-style PPO peer for `cerebellum bench train` (Pendulum-v1).

Why this exists: next to Stable-Baselines3 (sb3_ppo_pendulum.py), the other
common PPO baseline is CleanRL's single-file ppo_continuous_action.py: no
framework, one loop, easy to read. This is a single-file PPO written in that
style (written from the algorithm, not copied), so `cerebellum bench train`
can compare Cerebellum's PPO with a lean plain-PyTorch PPO on the same machine,
in the same run. Benchmark tooling only; never part of the product.

The algorithm, as in CleanRL's continuous-action PPO:
  * actor: obs -> 64 -> tanh -> 64 -> tanh -> action mean, plus a learned
    state-independent log-std vector (initialised to 0); critic: a separate
    64-64 tanh MLP -> value. Orthogonal init, gain sqrt(2) for hidden layers,
    0.01 for the actor's output layer and 1 for the critic's, biases 0.
  * envs: a gymnasium SyncVectorEnv of --num-envs Pendulum-v1, each wrapped
    on its own, as CleanRL does, with ClipAction, NormalizeObservation,
    observation clip to [-10, 10], NormalizeReward(gamma) and reward clip to
    [-10, 10]. The vector env resets in the same step an episode ends
    (SAME_STEP, the behaviour CleanRL's loop was written against).
  * rollout of --num-steps per env; GAE(gamma, lambda) stops at every episode
    end; then --update-epochs passes over the batch in shuffled minibatches:
    per-minibatch advantage normalisation, clipped surrogate, clipped value
    loss, entropy bonus, global grad-norm clip 0.5, Adam (eps 1e-5) with the
    learning rate annealed linearly to 0 over --max-steps.

One deliberate departure from CleanRL (--no-bootstrap-truncation turns it
off): when an episode is cut by the time limit (every Pendulum episode ends
that way, at 200 steps) rather than by a real termination, the last reward
gets gamma * V(final observation) added, as SB3 does. CleanRL treats the cut
as a true end, which teaches the critic that states near step 200 are worth
nothing; on Pendulum that leaves plain CleanRL PPO stuck in poor policies
(cleanrl issue #504). In our runs, without it 1 of 3 seeds reached -200 in
200k steps; with it 3 of 4 did, 2 of them in 60-70k steps.

Hyperparameters: CleanRL's defaults (gamma 0.99, 1 env, 2048 steps, lr 3e-4)
are tuned for MuJoCo and are slow on Pendulum. The defaults below (gamma 0.9,
lr 1e-3, 4 envs, minibatches of 64) follow the rl-baselines3-zoo Pendulum-v1
settings where they carry over; see DEFAULTS, and README.md for the seeds
they were checked on.

Measurement, identical to sb3_ppo_pendulum.py: every --eval-every env steps
(summed over envs) the training clock stops and --eval-episodes deterministic
episodes (action = actor mean, observations normalised with the training
statistics pooled over the envs, frozen) are run on a separate Pendulum-v1;
episode i starts from reset(seed=EVAL_SEED + i). Stop when the mean return
>= --target or after --max-steps env steps. One CPU thread throughout.

Exit codes: 0 ok (whether or not the target was reached: see "reached"),
2 bad arguments, 3 torch / gymnasium not installed (the Rust bench reads 3 as
"peer not installed").
"""

import os

# Pin every thread pool to one thread *before* numpy/torch are imported: the
# BLAS/OpenMP pools read these variables once, at load time.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

REQUIREMENTS = "bench/peers/requirements-cleanrl.txt"
ENV_ID = "Pendulum-v1"
EVAL_SEED = 1_000_000  # same evaluation start states as sb3_ppo_pendulum.py
OBS_CLIP = 10.0
REWARD_CLIP = 10.0

# Training hyperparameters (all overridable on the command line).
DEFAULTS = dict(
    num_envs=4,
    num_steps=512,        # per env per rollout -> batch of 2048
    num_minibatches=32,   # -> minibatches of 64, as SB3's default batch_size
    update_epochs=10,
    learning_rate=1e-3,   # annealed linearly to 0 over --max-steps
    gamma=0.9,            # Pendulum's reward is dense and local: a short horizon learns faster
    gae_lambda=0.95,
    clip_coef=0.2,
    clip_vloss=True,      # CleanRL's default: clipped value loss
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    init_logstd=0.0,      # CleanRL starts at log-std 0 (std 1)
    bootstrap_truncation=True,  # the one deliberate departure from CleanRL; see the docstring
)


def import_deps():
    try:
        # Imported late so a missing package gives exit code 3, not a traceback.
        import gymnasium  # noqa: PLC0415
        import numpy  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as err:
        print(
            f"error: the CleanRL-style PPO peer needs torch and gymnasium ({err}).\n"
            f"Install them with:  pip install -r {REQUIREMENTS}",
            file=sys.stderr,
        )
        sys.exit(3)
    return gymnasium, numpy, torch


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train a single-file CleanRL-style PPO on Pendulum-v1 until a "
        "deterministic evaluation reaches --target, as a peer for `cerebellum bench "
        "train`. Benchmark tooling only.",
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
                   help="give up after this many env steps; also the lr annealing horizon "
                   "(default: %(default)s)")
    hp = p.add_argument_group("PPO hyperparameters")
    for name, value in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            hp.add_argument(flag, action=argparse.BooleanOptionalAction, default=value,
                            help="(default: %(default)s)")
        else:
            hp.add_argument(flag, type=type(value), default=value, help="(default: %(default)s)")
    args = p.parse_args(argv)
    for name in ("eval_every", "eval_episodes", "max_steps", "num_envs", "num_steps",
                 "num_minibatches", "update_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        p.error("--num-envs * --num-steps must be divisible by --num-minibatches")
    return args


def build_agent(torch, obs_dim, act_dim, init_logstd):
    nn = torch.nn

    def layer(n_in, n_out, gain):
        # Orthogonal weights, zero bias: keeps activations well scaled at the
        # start; the small actor-output gain starts the policy near mean 0.
        lin = nn.Linear(n_in, n_out)
        nn.init.orthogonal_(lin.weight, gain)
        nn.init.constant_(lin.bias, 0.0)
        return lin

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            h = 64
            self.critic = nn.Sequential(
                layer(obs_dim, h, math.sqrt(2)), nn.Tanh(),
                layer(h, h, math.sqrt(2)), nn.Tanh(),
                layer(h, 1, 1.0),
            )
            self.actor_mean = nn.Sequential(
                layer(obs_dim, h, math.sqrt(2)), nn.Tanh(),
                layer(h, h, math.sqrt(2)), nn.Tanh(),
                layer(h, act_dim, 0.01),
            )
            # State-independent log-std: exploration noise is learned, not predicted.
            self.actor_logstd = nn.Parameter(torch.full((1, act_dim), init_logstd))

        def value(self, obs):
            return self.critic(obs).squeeze(-1)

        def act(self, obs, action=None):
            """Sample (or score) an action: action, log-prob, entropy, value."""
            mean = self.actor_mean(obs)
            dist = torch.distributions.Normal(mean, self.actor_logstd.expand_as(mean).exp())
            if action is None:
                action = dist.sample()
            return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.value(obs)

    return Agent()


def make_envs(gym, np, args):
    """CleanRL's wrapper stack, applied to each env on its own (so each env
    keeps its own normalisation statistics, exactly as CleanRL does)."""
    w = gym.wrappers
    obs_normalisers = []  # each env's NormalizeObservation, for evaluation

    def make_env():
        env = gym.make(ENV_ID)
        env = w.ClipAction(env)  # the Gaussian is unbounded; the env takes [-2, 2]
        env = w.NormalizeObservation(env)
        obs_normalisers.append(env)
        env = w.TransformObservation(env, lambda o: np.clip(o, -OBS_CLIP, OBS_CLIP), env.observation_space)
        env = w.NormalizeReward(env, gamma=args.gamma)
        env = w.TransformReward(env, lambda r: float(np.clip(r, -REWARD_CLIP, REWARD_CLIP)))
        return env

    # SAME_STEP: an env that ends an episode is reset inside that step() and
    # returns the new episode's first observation, the semantics CleanRL's
    # rollout loop was written for. (Gymnasium 1.x's default, NEXT_STEP,
    # would insert a dummy reset transition after every episode.)
    envs = gym.vector.SyncVectorEnv(
        [make_env for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    return envs, obs_normalisers


def pooled_obs_stats(np, obs_normalisers):
    """Mean and std of the observations seen by all envs together.

    Each training env normalises with its own running statistics; they all
    estimate the same distribution, so evaluation uses their pooled estimate
    (count-weighted mean and variance), frozen for the whole evaluation.
    """
    counts = np.array([n.obs_rms.count for n in obs_normalisers])
    means = np.stack([n.obs_rms.mean for n in obs_normalisers])
    variances = np.stack([n.obs_rms.var for n in obs_normalisers])
    w = (counts / counts.sum())[:, None]
    mean = (w * means).sum(0)
    var = (w * (variances + (means - mean) ** 2)).sum(0)
    return mean, np.sqrt(var + obs_normalisers[0].epsilon)


def evaluate(torch, np, agent, obs_normalisers, eval_env, episodes):
    """Mean undiscounted return of deterministic episodes, with frozen obs stats."""
    mean, std = pooled_obs_stats(np, obs_normalisers)
    returns = []
    with torch.inference_mode():
        for i in range(episodes):
            obs, _ = eval_env.reset(seed=EVAL_SEED + i)
            total, done = 0.0, False
            while not done:
                x = np.clip((obs - mean) / std, -OBS_CLIP, OBS_CLIP)
                action = agent.actor_mean(torch.as_tensor(x, dtype=torch.float32)).numpy()
                low, high = eval_env.action_space.low, eval_env.action_space.high
                obs, reward, terminated, truncated, _ = eval_env.step(np.clip(action, low, high))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    return sum(returns) / len(returns)


def main(argv=None):
    args = parse_args(argv)
    gym, np, torch = import_deps()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; harmless if too late
        pass

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    envs, obs_normalisers = make_envs(gym, np, args)
    eval_env = gym.make(ENV_ID)
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    agent = build_agent(torch, obs_dim, act_dim, args.init_logstd)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    n, t_len = args.num_envs, args.num_steps
    batch_size = n * t_len
    minibatch_size = batch_size // args.num_minibatches
    num_updates = math.ceil(args.max_steps / batch_size)

    # Rollout storage, time-major: [step, env].
    obs_buf = torch.zeros((t_len, n, obs_dim))
    act_buf = torch.zeros((t_len, n, act_dim))
    logp_buf = torch.zeros((t_len, n))
    rew_buf = torch.zeros((t_len, n))
    done_buf = torch.zeros((t_len, n))
    val_buf = torch.zeros((t_len, n))

    print(f"cleanrl-style ppo  torch {torch.__version__}  gymnasium {gym.__version__}")
    print(f"{ENV_ID}  seed {args.seed}  target {args.target:g}  eval every {args.eval_every} steps "
          f"x {args.eval_episodes} episodes  max {args.max_steps} steps  threads {torch.get_num_threads()}")
    print("hyperparameters: " + ", ".join(f"{k}={getattr(args, k)}" for k in DEFAULTS))

    curve, eval_wall = [], 0.0
    reached, reached_at = False, None
    next_eval = args.eval_every

    def run_eval(steps):
        nonlocal eval_wall, reached, reached_at
        t0 = time.perf_counter()
        ret = evaluate(torch, np, agent, obs_normalisers, eval_env, args.eval_episodes)
        eval_wall += time.perf_counter() - t0
        curve.append([steps, ret])
        print(f"  steps {steps:>7}  eval return {ret:9.2f}", flush=True)
        if ret >= args.target and not reached:
            reached, reached_at = True, steps
        return ret

    t_start = time.perf_counter()
    global_step = 0
    next_obs, _ = envs.reset(seed=args.seed)  # env i gets seed + i
    envs.action_space.seed(args.seed)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32)
    next_done = torch.zeros(n)
    stop = False

    for update in range(num_updates):
        # Linear lr annealing to 0 at --max-steps, as CleanRL anneals to 0 at total_timesteps.
        optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - update / num_updates)

        # ---- collect a rollout -------------------------------------------------
        for t in range(t_len):
            obs_buf[t], done_buf[t] = next_obs, next_done
            with torch.no_grad():
                action, logp, _, value = agent.act(next_obs)
            act_buf[t], logp_buf[t], val_buf[t] = action, logp, value
            obs, reward, terminated, truncated, info = envs.step(action.numpy())
            global_step += n
            reward = torch.as_tensor(reward, dtype=torch.float32)
            cut = truncated & ~terminated
            if args.bootstrap_truncation and cut.any():
                # A time-limit cut is not a real end: the pendulum would go on.
                # Credit the value of the state it was cut at, as SB3 does:
                # r += gamma * V(final_obs). (final_obs is already normalised
                # by that env's wrappers; V predicts normalised returns.)
                final = torch.as_tensor(np.stack(info["final_obs"][cut]), dtype=torch.float32)
                with torch.no_grad():
                    reward[torch.as_tensor(cut)] += args.gamma * agent.value(final)
            rew_buf[t] = reward
            next_obs = torch.as_tensor(obs, dtype=torch.float32)
            # Any episode end stops GAE from running into the next episode.
            next_done = torch.as_tensor(np.logical_or(terminated, truncated), dtype=torch.float32)

            if global_step >= next_eval:
                while next_eval <= global_step:
                    next_eval += args.eval_every
                run_eval(global_step)
            if reached or global_step >= args.max_steps:
                stop = True
                break
        if stop:
            break  # the partial rollout is not trained on: the run is over

        # ---- GAE ---------------------------------------------------------------
        with torch.no_grad():
            next_value = agent.value(next_obs)
            adv = torch.zeros((t_len, n))
            last = torch.zeros(n)
            for t in reversed(range(t_len)):
                if t == t_len - 1:
                    not_done, v_next = 1.0 - next_done, next_value
                else:
                    not_done, v_next = 1.0 - done_buf[t + 1], val_buf[t + 1]
                delta = rew_buf[t] + args.gamma * v_next * not_done - val_buf[t]
                last = delta + args.gamma * args.gae_lambda * not_done * last
                adv[t] = last
            ret_buf = adv + val_buf

        # ---- PPO epochs over shuffled minibatches -------------------------------
        b_obs, b_act = obs_buf.reshape(-1, obs_dim), act_buf.reshape(-1, act_dim)
        b_logp, b_adv = logp_buf.reshape(-1), adv.reshape(-1)
        b_ret, b_val = ret_buf.reshape(-1), val_buf.reshape(-1)
        for _ in range(args.update_epochs):
            perm = torch.randperm(batch_size)
            for start in range(0, batch_size, minibatch_size):
                mb = perm[start:start + minibatch_size]
                _, new_logp, entropy, new_val = agent.act(b_obs[mb], b_act[mb])
                ratio = (new_logp - b_logp[mb]).exp()

                mb_adv = b_adv[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()

                if args.clip_vloss:
                    # Clipped value loss: the new value may not move further
                    # than clip_coef from the rollout's value estimate for free.
                    v_clipped = b_val[mb] + (new_val - b_val[mb]).clamp(-args.clip_coef, args.clip_coef)
                    v_loss = 0.5 * torch.max((new_val - b_ret[mb]) ** 2, (v_clipped - b_ret[mb]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_val - b_ret[mb]) ** 2).mean()

                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

    total_wall = time.perf_counter() - t_start
    # If the budget ran out between evaluations, score the final policy too.
    if not reached and (not curve or curve[-1][0] != global_step):
        run_eval(global_step)
    train_wall = total_wall - eval_wall  # the final evaluation above is outside total_wall
    env_steps = reached_at if reached else global_step

    verdict = f"reached {args.target:g} at {env_steps} steps" if reached else \
        f"did not reach {args.target:g} in {env_steps} steps"
    print(f"{verdict}: train {train_wall:.2f} s ({env_steps / train_wall:,.0f} steps/s), "
          f"eval {eval_wall:.2f} s, final eval return {curve[-1][1]:.2f}")

    envs.close()
    eval_env.close()
    print(json.dumps({
        "peer": "cleanrl",
        "seed": args.seed,
        "reached": reached,
        "env_steps": env_steps,
        "train_wall_s": train_wall,
        "eval_wall_s": eval_wall,
        "final_eval_return": curve[-1][1],
        "curve": curve,
        "target": args.target,
        "hyperparameters": {k: getattr(args, k) for k in DEFAULTS},
        "versions": {"torch": torch.__version__, "gymnasium": gym.__version__, "numpy": np.__version__},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
