#!/bin/sh
# Learned-reward training in rounds (docs/rewards.md, "Rounds"): PPO on the
# learned progress for STEPS env steps, record the policy, retrain the
# progress model with the failed episodes of every round so far as
# negatives, continue the same run on the new model. No simulator reward is
# trained on; the simulator's success rate is only reported.
#
#   bench/reward-rounds.sh OUT ROUNDS STEPS CONFIG.toml DATA [DATA ...]
#
# OUT gets run/ (the training run), model<k>/ (the progress model of round
# k), neg<k>/ (round k's recorded episodes) and summary.txt (round, env
# steps, held-out success, mean return, hacking monitor). CONFIG.toml is a
# training config (e.g. `[bc] expert_episodes = 0` and `[reward]
# progress_shaping = "delta"`); DATA are stage-annotated recordings
# (`cerebellum record --expert`). MODEL_FLAGS are added to every
# `reward train` (e.g. MODEL_FLAGS="--fields target_offset --history 1");
# EXTRA_REWARD is appended to every --reward (e.g. ",success:models/s").
set -eu
out=$1 rounds=$2 steps=$3 config=$4
shift 4
bin=${CEREBELLUM:-./target/release/cerebellum}
data=""
for d in "$@"; do data="$data --data $d"; done
mkdir -p "$out"
flags=${MODEL_FLAGS:-}
"$bin" reward train --kind progress $data $flags --held-out "${HELD_OUT:-8}" --out "$out/model0" --json > "$out/model0.log"
negatives=""
k=1
while [ "$k" -le "$rounds" ]; do
  prev=$((k - 1))
  if [ "$k" -eq 1 ]; then
    "$bin" train --config "$config" --reward "progress:$out/model0${EXTRA_REWARD:-}" --steps "$steps" \
      --eval-episodes 50 --out "$out/run" --json > "$out/train$k.log"
  else
    "$bin" train --resume "$out/run" --reward "progress:$out/model$prev${EXTRA_REWARD:-}" \
      --steps "$steps" --eval-episodes 50 --json > "$out/train$k.log"
  fi
  tail -n 1 "$out/train$k.log" | python3 -c "import json, sys; d = json.load(sys.stdin); print($k, d['env_steps'], d['success_rate'], d['mean_return'], d.get('learned_truth_pearson_last'))" >> "$out/summary.txt"
  "$bin" run --checkpoint "$out/run" --clock sim --duration 60 --sample --seed "$k" \
    --record "$out/neg$k" --json > /dev/null
  negatives="$negatives --negatives $out/neg$k"
  "$bin" reward train --kind progress $data $flags $negatives --held-out "${HELD_OUT:-8}" --epochs 200 \
    --out "$out/model$k" --json > "$out/model$k.log"
  k=$((k + 1))
done
cat "$out/summary.txt"
