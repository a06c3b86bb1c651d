#!/usr/bin/env bash
# The VLA fine-tuning benchmark (docs/BENCHMARKS.md, "Fine-tuning the
# vision-language policy"): clone an imperfect base, fine-tune it with PPO
# and GRPO in each scope (head, lora, all), then through the control loop.
# Resumes if stopped: a run whose directory holds a checkpoint is skipped.
#
#   bench/vla-finetune/run.sh [OUT_DIR]   (default runs/vla-finetune; ~90 min on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${CEREBELLUM:-$here/../../target/release/cerebellum}"
out="${1:-runs/vla-finetune}"
mkdir -p "$out"
done_run() { [ -f "$1/contract.json" ] && [ -f "$1/summary.json" ]; }
run() { # name, then the command's arguments
  local name="$1"; shift
  if done_run "$out/$name"; then echo "$name: done"; return; fi
  rm -rf "${out:?}/$name"
  "$bin" "$@" --out "$out/$name" --json --timings | tail -1 > "$out/$name.json"
  cp "$out/$name.json" "$out/$name/summary.json"
  echo "$name: $(cat "$out/$name.json")"
}
run base train --task reach-color --policy vla --config "$here/base.toml"
for r in all-grpo lora-grpo head-grpo all-ppo lora-ppo head-ppo; do
  run "$r" train --resume "$out/base" --config "$here/$r.toml"
done
for r in online online-lora; do
  run "$r" train --online --resume "$out/base" --config "$here/$r.toml" --duration 1200
done
