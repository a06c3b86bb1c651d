#!/usr/bin/env python3
"""Plain-PyTorch small vision-language-action (VLA) policy peer for `cerebellum bench vla`.

Why this exists: Cerebellum's small VLA policy (policies/src/vla in the Rust
workspace) is the RT-1 / BC-Z "small VLA" recipe: a FiLM-conditioned conv
stack over a camera image, a spatial soft-argmax, a bag-of-words instruction
embedding, and an MLP head that outputs an action chunk. This script builds
the same network in eager PyTorch and times the two things the Rust bench
times, on one CPU thread, on the same machine, in the same run. Benchmark
tooling only; never part of the product.

The network (every size is a flag; defaults in brackets):
  * inputs: an image (B, 3, S, S) uint8 RGB [S = 64], normalised to float32
    as (x / 255 - 0.5) / 0.25; instruction token ids (B, L) int64 [L = 16],
    padded with id 0, with a float mask (B, L), 1 for real tokens; a joint
    state (B, 6) float32.
  * text: an embedding table (vocab 64 x text width 32); salience-weighted mean over the
    tokens -> (B, 32).
  * vision: conv layers, channels [32, 32, 32], kernels [5, 3, 3], strides
    [2, 1, 1], padding k // 2, each followed by FiLM then ReLU:
        x = relu(conv(x) * (1 + gamma_l) + beta_l)
    All gammas and betas come from ONE Linear(text width -> 2 * sum(channels))
    on the text embedding, split in order: for layer l, gamma_l then beta_l,
    each C_l wide, shaped (B, C_l, 1, 1).
  * spatial soft-argmax on the last feature map (B, C, h, w): a plain softmax
    over the h * w positions of each channel, then the expected x and y with
    pixel-centre coordinates linspace(-1, 1, w) along the width and
    linspace(-1, 1, h) along the height -> keypoints (B, 2C) laid out as
    [x of every channel, then y of every channel].
  * features = cat(keypoints, text embedding, state) -> (B, 2C + 32 + 6).
  * actor: Linear(F, 256) ReLU Linear(256, 256) ReLU Linear(256, H * act)
    [H = 10 chunk steps, act = 6] -> the chunk's action means; an auxiliary
    head Linear(256 -> 3) on the FIRST hidden layer's output (after its
    ReLU); a learned log-std parameter of size H * act.
  * critic: Linear(F, 64) tanh Linear(64, 64) tanh Linear(64, 1).
  * PyTorch's default initialisation, seeded (the cost does not depend on it).

What is measured, so the Rust side can do the same thing:
  * inference: batch-1 chunk latency under torch.inference_mode(). One timed
    call = normalise one uint8 observation, actor means and critic value (the
    text embedding, FiLM, conv stack and soft-argmax are shared by both).
    --infer-warmup untimed calls, then --infer-iters calls each timed on its
    own with time.perf_counter_ns; p50 and p99 are nearest-rank percentiles,
    in milliseconds, Python call overhead included.
  * training: behaviour-cloning throughput at --batch. A synthetic dataset of
    --dataset samples (random images, instructions of random length 1..L,
    states, chunk targets and auxiliary targets) is generated once from
    --seed. One step = draw --batch indices at random, random-shift
    augmentation of the uint8 images (pad --pad px by edge replication, then
    an independent random crop back to S x S per sample, i.e. DrQ's shift),
    normalise, forward, loss, backward, Adam (lr 3e-4) step, with
        loss = mean_b 0.5 * sum_chunk (mean - target)^2
             + mean_b sum_3 (aux - aux_target)^2.
    The critic and log-std are not in the behaviour-cloning loss, so the
    training forward runs the actor and auxiliary head only (the critic gets
    no gradient and Adam skips it). --warmup untimed steps, then
    --train-steps timed steps; samples/s = batch * train_steps / wall time
    (the data draw and the augmentation are part of the wall time).

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
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

REQUIREMENTS = "bench/peers/requirements-torch.txt"

PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def import_torch():
    try:
        import torch  # noqa: PLC0415 - imported late so we can exit with code 3
    except ImportError as err:
        print(
            f"error: the PyTorch VLA peer needs the 'torch' package ({err}).\n"
            f"Install it with:  pip install -r {REQUIREMENTS}",
            file=sys.stderr,
        )
        sys.exit(3)
    return torch


def int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time a small FiLM-conv vision-language-action policy (batch-1 chunk "
        "inference latency and behaviour-cloning training throughput) in plain PyTorch, "
        "as a peer for `cerebellum bench vla`. Benchmark tooling only.",
        epilog="The last line of stdout is one JSON object. Exit codes: 0 ok, 2 bad "
        f"arguments, 3 torch not installed (pip install -r {REQUIREMENTS}).",
    )
    net = p.add_argument_group("network")
    net.add_argument("--image", type=int, default=64, help="image side S, pixels (default: %(default)s)")
    net.add_argument("--channels", type=int_list, default=[32, 32, 32],
                     help="conv channels, comma-separated (default: 32,32,32)")
    net.add_argument("--kernels", type=int_list, default=[5, 3, 3],
                     help="conv kernel sizes, one per layer (default: 5,3,3)")
    net.add_argument("--strides", type=int_list, default=[2, 1, 1],
                     help="conv strides, one per layer (default: 2,1,1)")
    net.add_argument("--words", type=int, default=16, help="instruction length L in tokens (default: %(default)s)")
    net.add_argument("--vocab", type=int, default=64, help="vocabulary size, id 0 = padding (default: %(default)s)")
    net.add_argument("--text-width", type=int, default=32, help="token embedding width (default: %(default)s)")
    net.add_argument("--state-dim", type=int, default=6, help="joint state size (default: %(default)s)")
    net.add_argument("--horizon", type=int, default=10, help="action chunk length H (default: %(default)s)")
    net.add_argument("--act", type=int, default=6, help="action size per chunk step (default: %(default)s)")
    net.add_argument("--aux", type=int, default=3, help="auxiliary head outputs (default: %(default)s)")
    net.add_argument("--hidden", type=int, default=256, help="actor hidden width (default: %(default)s)")
    net.add_argument("--critic-hidden", type=int, default=64, help="critic hidden width (default: %(default)s)")

    run = p.add_argument_group("measurement")
    run.add_argument("--infer-iters", type=int, default=2000,
                     help="timed batch-1 inference calls (default: %(default)s)")
    run.add_argument("--infer-warmup", type=int, default=200,
                     help="untimed inference calls first (default: %(default)s)")
    run.add_argument("--batch", type=int, default=64, help="training batch size (default: %(default)s)")
    run.add_argument("--train-steps", type=int, default=200, help="timed training steps (default: %(default)s)")
    run.add_argument("--warmup", type=int, default=10, help="untimed training steps first (default: %(default)s)")
    run.add_argument("--dataset", type=int, default=4096,
                     help="synthetic dataset size in samples (default: %(default)s)")
    run.add_argument("--pad", type=int, default=4,
                     help="random-shift augmentation pad in pixels, 0 = off (default: %(default)s)")
    run.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default: %(default)s)")
    run.add_argument("--seed", type=int, default=0, help="seed for data, weights and sampling (default: %(default)s)")
    args = p.parse_args(argv)

    for name in ("image", "words", "vocab", "text_width", "state_dim", "horizon", "act", "aux", "hidden",
                 "critic_hidden", "infer_iters", "batch", "train_steps", "dataset"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("infer_warmup", "warmup", "pad"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.vocab < 2:
        p.error("--vocab must be >= 2 (id 0 is padding)")
    if not (len(args.channels) == len(args.kernels) == len(args.strides)):
        p.error("--channels, --kernels and --strides must have the same number of entries")
    if min(args.channels) < 1 or min(args.kernels) < 1 or min(args.strides) < 1:
        p.error("--channels, --kernels and --strides entries must be >= 1")
    side = args.image
    for k, s in zip(args.kernels, args.strides):
        side = (side + 2 * (k // 2) - k) // s + 1
        if side < 1:
            p.error("the conv stack shrinks the image to nothing; use a larger --image or smaller strides")
    args.feature_side = side
    return args


def build_policy(torch, args):
    nn = torch.nn
    F = torch.nn.functional

    class VlaPolicy(nn.Module):
        def __init__(self):
            super().__init__()
            self.channels = list(args.channels)
            self.embed = nn.Embedding(args.vocab, args.text_width)
            # One learned salience per word: the instruction's embedding is
            # the softmax(8 tanh(salience))-weighted mean of its words'
            # (as policies/src/vla/model.rs).
            self.salience = nn.Parameter(torch.zeros(args.vocab))
            self.film = nn.Linear(args.text_width, 2 * sum(self.channels))
            convs, c_in = [], 3
            for c, k, s in zip(args.channels, args.kernels, args.strides):
                # No bias: the FiLM shift beta that follows gives each channel one
                # (as policies/src/vla/model.rs).
                convs.append(nn.Conv2d(c_in, c, k, stride=s, padding=k // 2, bias=False))
                c_in = c
            self.convs = nn.ModuleList(convs)

            side, c_last = args.feature_side, self.channels[-1]
            # Pixel-centre coordinates of the last feature map, flattened in
            # the row-major order of .flatten(2): index r * w + c.
            lin = torch.linspace(-1.0, 1.0, side)
            self.register_buffer("pos_x", lin.repeat(side), persistent=False)              # x = lin[c]
            self.register_buffer("pos_y", lin.repeat_interleave(side), persistent=False)   # y = lin[r]

            n_feat = 2 * c_last + args.text_width + args.state_dim
            h, out = args.hidden, args.horizon * args.act
            self.fc1 = nn.Linear(n_feat, h)
            self.fc2 = nn.Linear(h, h)
            self.mean_head = nn.Linear(h, out)
            self.aux_head = nn.Linear(h, args.aux)
            self.log_std = nn.Parameter(torch.zeros(out))
            ch = args.critic_hidden
            self.critic = nn.Sequential(nn.Linear(n_feat, ch), nn.Tanh(), nn.Linear(ch, ch), nn.Tanh(),
                                        nn.Linear(ch, 1))

        def features(self, image_u8, tokens, mask, state):
            """uint8 (B,3,S,S), int64 (B,L), float (B,L), float (B,state) -> (B, 2C + text + state)."""
            x = (image_u8.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD
            # Salience-weighted mean of the token embeddings.
            weights = torch.exp(8.0 * torch.tanh(self.salience[tokens])) * mask
            weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
            text = (self.embed(tokens) * weights.unsqueeze(-1)).sum(1)

            film = self.film(text)
            offset = 0
            for conv, c in zip(self.convs, self.channels):
                gamma = film[:, offset:offset + c, None, None]
                beta = film[:, offset + c:offset + 2 * c, None, None]
                offset += 2 * c
                x = F.relu(conv(x) * (1.0 + gamma) + beta)

            # Spatial soft-argmax: per-channel softmax over positions, expected x and y.
            attn = torch.softmax(x.flatten(2), dim=-1)        # (B, C, h*w)
            kx = attn @ self.pos_x                           # (B, C)
            ky = attn @ self.pos_y                           # (B, C)
            return torch.cat([kx, ky, text, state], dim=1)

        def actor(self, feats):
            """-> (chunk means (B, H*act), auxiliary outputs (B, aux))."""
            h1 = F.relu(self.fc1(feats))
            h2 = F.relu(self.fc2(h1))
            return self.mean_head(h2), self.aux_head(h1)

        def forward(self, image_u8, tokens, mask, state):
            """Inference: chunk means and critic value for a batch of observations."""
            feats = self.features(image_u8, tokens, mask, state)
            mean, _ = self.actor(feats)
            return mean, self.critic(feats).squeeze(-1)

    return VlaPolicy()


def make_dataset(torch, args, gen):
    n, s, L = args.dataset, args.image, args.words
    lengths = torch.randint(1, L + 1, (n, 1), generator=gen)
    mask = (torch.arange(L).unsqueeze(0) < lengths).float()
    tokens = torch.randint(1, args.vocab, (n, L), generator=gen) * mask.long()
    return {
        "image": torch.randint(0, 256, (n, 3, s, s), generator=gen, dtype=torch.uint8),
        "tokens": tokens,
        "mask": mask,
        "state": torch.randn(n, args.state_dim, generator=gen),
        "target": torch.randn(n, args.horizon * args.act, generator=gen),
        "aux_target": torch.randn(n, args.aux, generator=gen),
    }


def random_shift(torch, images, pad, gen):
    """Pad by `pad` px with edge replication, then crop back to the original
    size at an independent random offset per sample (offsets 0..2*pad).

    Done as one gather on the uint8 batch: reading row clamp(oy + i - pad) and
    column clamp(ox + j - pad) is exactly "replicate-pad, then crop at (oy, ox)".
    """
    if pad == 0:
        return images
    b, _, h, w = images.shape
    oy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen)
    rows = (oy + torch.arange(h) - pad).clamp_(0, h - 1)            # (B, h)
    cols = (ox + torch.arange(w) - pad).clamp_(0, w - 1)            # (B, w)
    bi = torch.arange(b)[:, None, None]
    # Advanced indices around a slice: result is (B, h, w, C); back to (B, C, h, w).
    return images[bi, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list."""
    n = len(sorted_values)
    return sorted_values[min(n - 1, max(0, round(q / 100 * n) - 1))]


def bench_inference(torch, policy, data, args):
    policy.eval()
    obs = (data["image"][:1].clone(), data["tokens"][:1].clone(), data["mask"][:1].clone(),
           data["state"][:1].clone())
    clock = time.perf_counter_ns
    times = [0] * args.infer_iters
    with torch.inference_mode():
        for _ in range(args.infer_warmup):
            policy(*obs)
        for i in range(args.infer_iters):
            t0 = clock()
            policy(*obs)
            times[i] = clock() - t0
    ms = sorted(t / 1e6 for t in times)
    return percentile(ms, 50), percentile(ms, 99), sum(ms) / len(ms)


def bench_training(torch, policy, data, args, gen):
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=args.lr)

    def step():
        idx = torch.randint(0, args.dataset, (args.batch,), generator=gen)
        images = random_shift(torch, data["image"][idx], args.pad, gen)
        feats = policy.features(images, data["tokens"][idx], data["mask"][idx], data["state"][idx])
        mean, aux = policy.actor(feats)
        bc = 0.5 * (mean - data["target"][idx]).pow(2).sum(1).mean()
        aux_loss = (aux - data["aux_target"][idx]).pow(2).sum(1).mean()
        loss = bc + aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    first = last = None
    for i in range(args.train_steps):
        last = step()
        if i == 0:
            first = last
    wall = time.perf_counter() - t0
    return wall, first, last


def main(argv=None):
    args = parse_args(argv)
    torch = import_torch()
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; harmless if too late
        pass
    torch.manual_seed(args.seed)

    policy = build_policy(torch, args)
    params = sum(p.numel() for p in policy.parameters())
    gen = torch.Generator().manual_seed(args.seed)
    data = make_dataset(torch, args, gen)

    side = args.feature_side
    n_feat = 2 * args.channels[-1] + args.text_width + args.state_dim
    print(f"torch {torch.__version__}  threads {torch.get_num_threads()}  (CPU)")
    print(f"image {args.image}x{args.image}  conv channels {args.channels} kernels {args.kernels} "
          f"strides {args.strides} -> {args.channels[-1]}x{side}x{side}  words {args.words}  "
          f"vocab {args.vocab}  text {args.text_width}  state {args.state_dim}")
    print(f"features {n_feat}  actor {args.hidden}-{args.hidden} -> {args.horizon}x{args.act} chunk "
          f"+ aux {args.aux}  critic {args.critic_hidden}-{args.critic_hidden}  params {params:,}")

    p50, p99, mean_ms = bench_inference(torch, policy, data, args)
    print(f"inference (batch 1, means + value): p50 {p50:.3f} ms  p99 {p99:.3f} ms  mean {mean_ms:.3f} ms  "
          f"over {args.infer_iters} calls")

    wall, first, last = bench_training(torch, policy, data, args, gen)
    sps = args.batch * args.train_steps / wall
    print(f"training (batch {args.batch}, shift pad {args.pad}, Adam lr {args.lr}): {args.train_steps} steps in "
          f"{wall:.2f} s, {wall / args.train_steps * 1e3:.1f} ms/step, {sps:,.0f} samples/s  "
          f"(loss {first:.3f} -> {last:.3f})")

    print(json.dumps({
        "engine": "pytorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": params,
        "batch": args.batch,
        "infer_p50_ms": p50,
        "infer_p99_ms": p99,
        "infer_mean_ms": mean_ms,
        "infer_iters": args.infer_iters,
        "train_samples_per_second": sps,
        "train_steps": args.train_steps,
        "train_wall_s": wall,
        "channels": args.channels,
        "kernels": args.kernels,
        "strides": args.strides,
        "horizon": args.horizon,
        "act": args.act,
        "text_width": args.text_width,
        "words": args.words,
        "image": args.image,
        "vocab": args.vocab,
        "state_dim": args.state_dim,
        "aux": args.aux,
        "hidden": args.hidden,
        "critic_hidden": args.critic_hidden,
        "pad": args.pad,
        "lr": args.lr,
        "dataset": args.dataset,
        "seed": args.seed,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
