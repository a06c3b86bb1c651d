#!/usr/bin/env python3
"""Batch-1 policy inference latency peer: PyTorch and ONNX Runtime.

Why this exists: on a robot the policy runs once per control tick on one
observation, so what matters is the latency of a batch-1 forward pass, not
throughput. The Rust benchmark times Cerebellum's forward pass for the same
MLP and compares it with the two runtimes a Python deployment would use:
eager PyTorch (under torch.inference_mode) and ONNX Runtime on CPU. Benchmark
tooling only; never part of the product.

What it measures, so the Rust side can do the same thing:
  * the network: obs -> hidden -> tanh -> hidden -> tanh -> act (the output
    layer is linear, as a policy's mean head is), float32. Weights come from
    a seeded numpy RNG (uniform +-1/sqrt(fan_in), PyTorch's default Linear
    init), so both runtimes run the very same numbers; the script checks that
    their outputs agree.
  * PyTorch: nn.Sequential in eval mode, input a preallocated (1, obs) tensor,
    the timed loop inside one torch.inference_mode() block.
  * ONNX Runtime: the same network written as an ONNX graph with onnx.helper
    (Gemm -> Tanh -> Gemm -> Tanh -> Gemm, opset 17) into a temporary
    directory, loaded into an InferenceSession on the CPU execution provider
    with all graph optimisations, sequential execution and one intra-op and
    one inter-op thread; input a preallocated (1, obs) float32 array, timed
    call session.run(None, {"obs": x}).
  * each call is timed on its own with time.perf_counter_ns after --warmup
    untimed calls; p50/p99 (and mean, min) over --iters calls, in
    microseconds. Python call overhead is part of the number, as it is for
    any Python caller.

One CPU thread for both runtimes (torch intra/inter-op, OpenMP, MKL, ORT).

A runtime that is not installed is reported as null with a reason. Exit
codes: 0 at least one runtime measured, 2 bad arguments, 3 neither torch nor
onnxruntime (+ onnx) installed (the Rust bench reads 3 as "peer not
installed").
"""

import os

# Pin every thread pool to one thread *before* numpy/torch/onnxruntime are
# imported: the BLAS/OpenMP pools read these variables once, at load time.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

REQUIREMENTS = "bench/peers/requirements-latency.txt"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version that goes with opset 17; accepted by every recent ORT


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Batch-1 forward latency of an obs->hidden->hidden->act tanh MLP in "
        "PyTorch and ONNX Runtime (one thread each), as a peer for the Cerebellum "
        "inference benchmark. Benchmark tooling only.",
        epilog="The last line of stdout is one JSON object. Exit codes: 0 ok, 2 bad "
        f"arguments, 3 neither runtime installed (pip install -r {REQUIREMENTS}).",
    )
    p.add_argument("--obs", type=int, default=64, help="observation size (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=256, help="hidden width (default: %(default)s)")
    p.add_argument("--act", type=int, default=8, help="action size (default: %(default)s)")
    p.add_argument("--iters", type=int, default=20000, help="timed calls per runtime (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2000, help="untimed calls first (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and input (default: %(default)s)")
    args = p.parse_args(argv)
    for name in ("obs", "hidden", "act", "iters"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def make_weights(np, args):
    """[(W, b)] per layer, W of shape (out, in) as in torch.nn.Linear."""
    rng = np.random.default_rng(args.seed)
    sizes = [args.obs, args.hidden, args.hidden, args.act]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(n_in)
        w = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
        layers.append((w, b))
    return layers


def summarise(samples_ns):
    """Latency stats in microseconds."""
    us = sorted(s / 1e3 for s in samples_ns)

    def pct(q):  # nearest-rank percentile
        return us[min(len(us) - 1, max(0, round(q / 100 * len(us)) - 1))]

    return {"p50_us": pct(50), "p99_us": pct(99), "mean_us": statistics.fmean(us), "min_us": us[0],
            "iters": len(us)}


def time_calls(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    out = [0] * iters
    for i in range(iters):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def bench_torch(np, layers, x_np, args):
    """Returns (stats, output, version) or raises ImportError."""
    import torch  # noqa: PLC0415 - optional: reported as null when missing

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; harmless if too late
        pass

    mods = []
    for i, (w, b) in enumerate(layers):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*mods).eval()
    x = torch.from_numpy(x_np.copy())

    with torch.inference_mode():
        out = model(x).numpy().copy()
        samples = time_calls(lambda: model(x), args.warmup, args.iters)
    return summarise(samples), out, torch.__version__


def build_onnx(onnx, layers, path, args):
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    nodes, inits = [], []
    current = "obs"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(layers) - 1
        gemm_out = "act" if last else f"z{i}"
        # Gemm with transB=1 computes x @ W^T + b, i.e. torch.nn.Linear.
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [gemm_out], transB=1))
        if not last:
            nodes.append(helper.make_node("Tanh", [gemm_out], [f"h{i}"]))
            current = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, args.obs])],
        [helper.make_tensor_value_info("act", TensorProto.FLOAT, [1, args.act])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="cerebellum-bench-peer")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, path)


def bench_ort(layers, x_np, args):
    """Returns (stats, output, version) or raises ImportError."""
    import onnx  # noqa: PLC0415 - optional: reported as null when missing
    import onnxruntime as ort  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="cerebellum-latency-") as tmp:
        path = os.path.join(tmp, "mlp.onnx")
        build_onnx(onnx, layers, path, args)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])

    feeds = {"obs": x_np}
    out = sess.run(None, feeds)[0]
    samples = time_calls(lambda: sess.run(None, feeds), args.warmup, args.iters)
    return summarise(samples), out, f"{ort.__version__} (onnx {onnx.__version__})"


def main(argv=None):
    args = parse_args(argv)
    try:
        import numpy as np  # noqa: PLC0415
    except ImportError as err:
        print(f"error: the latency peer needs numpy ({err}).\n"
              f"Install it with:  pip install -r {REQUIREMENTS}", file=sys.stderr)
        return 3

    layers = make_weights(np, args)
    x = np.random.default_rng(args.seed + 1).standard_normal((1, args.obs)).astype(np.float32)
    print(f"MLP {args.obs} -> {args.hidden} -> {args.hidden} -> {args.act} (tanh hidden, linear out), "
          f"batch 1, float32, warmup {args.warmup}, iters {args.iters}, 1 thread")

    results, outputs, versions = {}, {}, {}
    for name, run in (("pytorch", lambda: bench_torch(np, layers, x, args)),
                      ("onnxruntime", lambda: bench_ort(layers, x, args))):
        try:
            stats, out, version = run()
        except ImportError as err:
            results[name] = None
            results[name + "_reason"] = f"not installed: {err} (pip install -r {REQUIREMENTS})"
            print(f"{name:>12}: skipped, {results[name + '_reason']}")
            continue
        results[name], outputs[name], versions[name] = stats, out, version
        print(f"{name:>12}: p50 {stats['p50_us']:7.2f} us  p99 {stats['p99_us']:7.2f} us  "
              f"mean {stats['mean_us']:7.2f} us  min {stats['min_us']:7.2f} us  ({version})")

    if not outputs:
        print(f"error: neither torch nor onnxruntime+onnx is installed.\n"
              f"Install them with:  pip install -r {REQUIREMENTS}", file=sys.stderr)
        return 3

    result = {"peer": "latency", **results,
              "config": {k: getattr(args, k) for k in ("obs", "hidden", "act", "iters", "warmup")},
              "versions": versions}
    if len(outputs) == 2:
        # Same weights, same input: the two runtimes must compute the same thing.
        diff = float(np.max(np.abs(outputs["pytorch"] - outputs["onnxruntime"])))
        result["max_abs_output_diff"] = diff
        print(f"max |pytorch - onnxruntime| output difference: {diff:.2e}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
