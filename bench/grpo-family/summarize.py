#!/usr/bin/env python3
"""Markdown tables of the GRPO-family benchmark (bench/grpo-family/run.sh).

    python3 bench/grpo-family/summarize.py [RUNS]    (default: $RUNS, else runs/grpo-family)

Reads RUNS/<setting>/<name>-s<seed>.json, each {"wall_s", "name", "algo",
"group", "seed", "command", "result": <the train --json last line>}. The
figures are the final held-out evaluation's (`result.success_rate`,
`result.mean_return`, over `result.eval_episodes` episodes), not the last
training iteration's (`final_train_*`). Env steps are the run's own: a fork
(reach-dr) subtracts its parent's (`result.parent.env_steps`).
"""
import glob
import json
import math
import os
import statistics
import sys

ORDER = ["start", "ppo", "grpo", "dr-grpo", "rloo", "mc-grpo", "spo", "gdpo", "stratified",
         "remax", "mc-grpo-g2", "grpo-g2", "grpo-dapo"]
SETTINGS = ["reach-scratch", "pendulum", "reach-dr", "reach-dr-hard", "reach-cloned"]
# Settings without a success criterion: the mean return is the measure.
RETURN_ONLY = {"pendulum"}
# (a, b, what it answers): a − b of the measure's seed means.
COMPARISONS = [
    ("mc-grpo-g2", "grpo", "MC-GRPO at G=2 (+1) against GRPO at G=8; the issue's check, at most 5 points below:"),
    ("ppo", "grpo", "PPO against GRPO (G=8)"),
    ("mc-grpo-g2", "grpo-g2", "MC-GRPO against GRPO, both G=2"),
    ("mc-grpo", "grpo", "MC-GRPO against GRPO, both G=8"),
    ("grpo-dapo", "grpo", "GRPO with DAPO's clip-higher and dynamic sampling against plain GRPO"),
]
LABELS = {"start": "start (before RL: the checkpoint, or the clone)"}


def load(runs):
    by_setting = {}
    for path in sorted(glob.glob(os.path.join(runs, "*", "*.json"))):
        setting = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[: -len(".json")]
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            print(f"<!-- skipped {path}: {e} -->")
            continue
        if "result" not in d:
            continue
        name, seed = d.get("name"), d.get("seed")
        if name is None or seed is None:
            base, _, s = stem.rpartition("-s")
            name, seed = base or stem, int(s) if s.isdigit() else None
        r = d["result"]
        parent = (r.get("parent") or {}).get("env_steps") or 0
        steps = r.get("env_steps")
        by_setting.setdefault(setting, {}).setdefault(name, []).append({
            "seed": seed,
            "success": r.get("success_rate"),
            "ret": r.get("mean_return"),
            "episodes": r.get("eval_episodes", r.get("episodes")),
            "steps": steps - parent if steps is not None else 0,
            "wall": d.get("wall_s"),
        })
        # reach-cloned: every run clones the same demonstrations first (per
        # seed); its held-out evaluation before RL is the start row.
        bc = r.get("bc") or {}
        if setting == "reach-cloned" and bc.get("success_rate") is not None:
            starts = by_setting[setting].setdefault("start", [])
            if all(x["seed"] != seed for x in starts):
                starts.append({"seed": seed, "success": bc["success_rate"],
                               "ret": bc.get("mean_return"),
                               "episodes": r.get("eval_episodes"), "steps": 0, "wall": None})
    for algos in by_setting.values():
        for rows in algos.values():
            rows.sort(key=lambda x: (x["seed"] is None, x["seed"]))
    return by_setting


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def fmt(m, s, digits):
    if m is None:
        return "–"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def pct(x):
    return None if x is None else 100.0 * x


def algo_key(name):
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def table(setting, algos):
    return_only = setting in RETURN_ONLY
    out = []
    if return_only:
        out.append("| algo | seeds | mean return (mean ± std) | per seed | env steps | wall s (mean) |")
        out.append("|---|---|---|---|---|---|")
    else:
        out.append("| algo | seeds | success % (mean ± std) | per seed | mean return (mean ± std) "
                   "| env steps | wall s (mean) |")
        out.append("|---|---|---|---|---|---|---|")
    for name in sorted(algos, key=algo_key):
        rows = algos[name]
        seeds = ",".join(str(r["seed"]) for r in rows)
        ret = fmt(*mean_std([r["ret"] for r in rows]), 2)
        steps = sorted({r["steps"] for r in rows})
        steps = "/".join(f"{s:,}" for s in steps)
        wall = fmt(mean_std([r["wall"] for r in rows])[0], None, 1)
        label = LABELS.get(name, name)
        if return_only:
            per = " ".join("–" if r["ret"] is None else f"{r['ret']:.1f}" for r in rows)
            out.append(f"| {label} | {len(rows)} ({seeds}) | {ret} | {per} | {steps} | {wall} |")
        else:
            succ = fmt(*mean_std([pct(r["success"]) for r in rows]), 1)
            per = " ".join("–" if r["success"] is None else f"{pct(r['success']):.1f}" for r in rows)
            out.append(f"| {label} | {len(rows)} ({seeds}) | {succ} | {per} | {ret} | {steps} | {wall} |")
    return out


def comparisons(setting, algos):
    return_only = setting in RETURN_ONLY
    measure = (lambda r: r["ret"]) if return_only else (lambda r: pct(r["success"]))
    unit = "return" if return_only else "points"
    out = []
    for a, b, what in COMPARISONS:
        if a not in algos or b not in algos:
            continue
        xa = [measure(r) for r in algos[a] if measure(r) is not None]
        xb = [measure(r) for r in algos[b] if measure(r) is not None]
        if not xa or not xb:
            continue
        diff = statistics.mean(xa) - statistics.mean(xb)
        line = f"- {a} − {b}: **{diff:+.1f}** {unit}"
        if len(xa) > 1 and len(xb) > 1:
            se = math.sqrt(statistics.variance(xa) / len(xa) + statistics.variance(xb) / len(xb))
            line += f" (± {se:.1f} s.e.)"
        # Same seed, same held-out starts: the per-seed differences.
        sa = {r["seed"]: measure(r) for r in algos[a]}
        sb = {r["seed"]: measure(r) for r in algos[b]}
        common = [s for s in sa if s in sb and sa[s] is not None and sb[s] is not None]
        if common:
            line += "; per seed " + ", ".join(f"s{s} {sa[s] - sb[s]:+.1f}" for s in sorted(common))
        line += f" — {what}"
        if not return_only and a == "mc-grpo-g2" and b == "grpo":
            line += " **yes**" if diff >= -5.0 else " **no**"
        out.append(line)
    return out


def main():
    runs = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RUNS", "runs/grpo-family")
    data = load(runs)
    print(f"# GRPO family: {runs}\n")
    print("Final held-out evaluation of each run (`success_rate`, `mean_return` of the train JSON); "
          "mean ± sample std over seeds; env steps are the run's own.\n")
    default = os.path.join(runs, "reach-default.json")
    if os.path.exists(default):
        with open(default) as f:
            d = json.load(f)
        r = d["result"]
        sr = r.get("success_rate")
        print(f"reach-dr starts from `reach-default` (the default reach recipe, seed 0): "
              f"{r.get('env_steps'):,} env steps, {d.get('wall_s', 0):.0f} s, held-out success "
              f"without randomisation {'–' if sr is None else f'{100 * sr:.1f}%'} "
              f"over {r.get('eval_episodes')} episodes.\n")
    if not data:
        print("(no finished runs)")
        return
    for setting in sorted(data, key=lambda s: (SETTINGS.index(s) if s in SETTINGS else 99, s)):
        algos = data[setting]
        episodes = sorted({r["episodes"] for rows in algos.values() for r in rows if r["episodes"]})
        print(f"## {setting}\n")
        if episodes:
            print(f"Held-out episodes per run: {'/'.join(map(str, episodes))}.\n")
        print("\n".join(table(setting, algos)))
        comp = comparisons(setting, algos)
        if comp:
            print()
            print("\n".join(comp))
        print()


if __name__ == "__main__":
    main()
