#!/usr/bin/env python3
"""Learning curves of the GRPO-family benchmark: RUNS/grpo-family.png.

    python3 bench/grpo-family/plot.py [RUNS]    (default: $RUNS, else runs/grpo-family)

One panel per setting: the training success rate (pendulum: mean return)
from each run's metrics.csv against the run's own env steps (a fork's are
counted from its parent's checkpoint), averaged over seeds per algorithm
(band: ± std over seeds) and smoothed with a short moving average. Runs still
going are drawn too. reach-dr also shows the starting checkpoint's held-out
success under the randomisation (dotted).

Needs matplotlib. Without it, the script re-runs itself with the python of
the venv that bench/grpo-family/setup-plot.sh makes (${VENV:-/tmp/grpo-family-venv}).
"""
import csv
import glob
import json
import os
import re
import sys
import warnings

VENV = os.environ.get("VENV", "/tmp/grpo-family-venv")

try:
    import matplotlib
except ImportError:
    py = os.path.join(VENV, "bin", "python")
    if os.path.exists(py) and not os.environ.get("GRPO_FAMILY_PLOT_REEXEC"):
        os.environ["GRPO_FAMILY_PLOT_REEXEC"] = "1"
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("plot.py needs matplotlib: run  bash bench/grpo-family/setup-plot.sh  "
             f"(a venv at {VENV}; VENV= to change), then this again")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ORDER = ["ppo", "grpo", "dr-grpo", "rloo", "mc-grpo", "spo", "gdpo", "stratified", "remax"]
SETTINGS = ["reach-scratch", "pendulum", "reach-dr", "reach-dr-hard", "reach-cloned"]
RETURN_ONLY = {"pendulum"}
GRID = 200  # points of the common env-steps grid per algorithm
SMOOTH = 9  # moving-average window, in grid points


def read_curve(run_dir, column):
    xs, ys = [], []
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            x, y = row.get("env_steps"), row.get(column)
            if x and y:
                xs.append(float(x))
                ys.append(float(y))
    return np.array(xs), np.array(ys)


def parent_steps(run_dir):
    """A fork's rows continue its parent's env steps: the offset to remove."""
    for path, keys in ((os.path.join(run_dir, "contract.json"), ("provenance", "parent")),
                       (run_dir + ".json", ("result", "parent"))):
        try:
            with open(path) as f:
                d = json.load(f)
            for k in keys:
                d = d[k]
            if d is None:
                return 0.0
            return float(d["env_steps"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    # Still running, no checkpoint yet: the first row is one iteration in.
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        steps = [float(r["env_steps"]) for r, _ in zip(csv.DictReader(f), range(2))]
    return steps[0] - (steps[1] - steps[0]) if len(steps) == 2 else 0.0


def smooth(y, w):
    ok = ~np.isnan(y)
    k = np.ones(w)
    num = np.convolve(np.where(ok, y, 0.0), k, mode="same")
    den = np.convolve(ok.astype(float), k, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def style(name):
    m = re.fullmatch(r"(.+)-g(\d+)", name)
    base = m.group(1) if m else name
    i = ORDER.index(base) if base in ORDER else len(ORDER) + sum(map(ord, base)) % 7
    return plt.get_cmap("tab10" if i < 10 else "Dark2")(i % 10), ("--" if m else "-")


def algo_key(name):
    m = re.fullmatch(r"(.+)-g(\d+)", name)
    base = m.group(1) if m else name
    return (ORDER.index(base) if base in ORDER else len(ORDER), base, name)


def main():
    runs = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RUNS", "runs/grpo-family")
    curves = {}  # setting -> name -> [(x, y)]
    for path in sorted(glob.glob(os.path.join(runs, "*", "*", "metrics.csv"))):
        run_dir = os.path.dirname(path)
        setting = os.path.basename(os.path.dirname(run_dir))
        m = re.fullmatch(r"(.+)-s(\d+)", os.path.basename(run_dir))
        if not m:
            continue
        column = "mean_return" if setting in RETURN_ONLY else "success_rate"
        x, y = read_curve(run_dir, column)
        if len(x) < 2:
            continue
        x = x - parent_steps(run_dir)
        if setting not in RETURN_ONLY:
            y = 100.0 * y
        curves.setdefault(setting, {}).setdefault(m.group(1), []).append((x, y))
    if not curves:
        sys.exit(f"no run with a metrics.csv of 2 rows or more under {runs}/<setting>/")

    settings = sorted(curves, key=lambda s: (SETTINGS.index(s) if s in SETTINGS else 99, s))
    fig, axes = plt.subplots(1, len(settings), figsize=(6.2 * len(settings), 4.6), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for name in sorted(curves[setting], key=algo_key):
            seeds = curves[setting][name]
            grid = np.linspace(min(x[0] for x, _ in seeds), max(x[-1] for x, _ in seeds), GRID)
            ys = np.array([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in seeds])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(ys, axis=0)
                std = np.nanstd(ys, axis=0) if len(seeds) > 1 else None
            colour, line = style(name)
            mean = smooth(mean, SMOOTH)
            ax.plot(grid, mean, line, color=colour, lw=1.6, label=f"{name} ({len(seeds)})")
            if std is not None:
                std = smooth(std, SMOOTH)
                ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.08, lw=0)
        if setting in ("reach-dr", "reach-dr-hard"):
            start = []
            for p in glob.glob(os.path.join(runs, setting, "start-s*.json")):
                try:
                    with open(p) as f:
                        start.append(100.0 * json.load(f)["result"]["success_rate"])
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            if start:
                ax.axhline(np.mean(start), color="grey", ls=":", lw=1.2,
                           label=f"start, held-out ({np.mean(start):.1f}%)")
        ax.set_title(setting)
        ax.set_xlabel("env steps" + (" (of the fork)" if setting in ("reach-dr", "reach-dr-hard") else ""))
        ax.set_ylabel("mean return" if setting in RETURN_ONLY else "training success rate (%)")
        if setting not in RETURN_ONLY:
            ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, title="algo (seeds)", title_fontsize=7)
    fig.suptitle("GRPO family: training curves, mean over seeds ± std, moving average", fontsize=10)
    fig.tight_layout()
    out = os.path.join(runs, "grpo-family.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
