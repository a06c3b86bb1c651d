#!/usr/bin/env bash
# The GRPO-family benchmark (bench/grpo-family/README.md): every algorithm of
# `cerebellum train --algo` on three settings, seeds 0 1 2, then a summary
# ($RUNS/summary.md) and a plot ($RUNS/grpo-family.png, if matplotlib is set
# up: bench/grpo-family/setup-plot.sh).
#
#   bench/grpo-family/run.sh
#
# Environment (all optional):
#   CEREBELLUM   the binary (default: target/release/cerebellum of this repo)
#   RUNS         the output root (default: runs/grpo-family, in the repo root)
#   SETTINGS     subset of: reach-scratch pendulum reach-dr reach-dr-hard
#                reach-cloned
#   ALGOS        subset of: ppo grpo dr-grpo rloo mc-grpo spo gdpo stratified
#                remax mc-grpo-g2 grpo-g2 grpo-dapo (NAME-gN = algo NAME with
#                --group N; NAME-dapo = with --clip-high 0.28 --dynamic-sampling)
#   SEEDS        default: 0 1 2
#   STEPS_SCALE  divide every step budget by this integer (smoke tests)
#   TRAIN_ARGS   extra flags appended to every per-algorithm train command
#
# Resumes: a run whose $RUNS/<setting>/<name>-s<seed>.json exists is skipped;
# that file is written (wall time + the train JSON) only when the run
# succeeded. A run directory left by an interrupted run is removed first.
# A failed run is logged ($RUNS/<setting>/logs/) and the others go on; the
# script then exits 1 after the summary.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# Paths given relative to the caller's directory, before moving to the repo
# root (where the runs' config.toml files record bench/... paths).
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
bin="${CEREBELLUM:-}"
if [ -z "$bin" ]; then
  bin="$root/target/release/cerebellum"
elif [[ "$bin" == */* ]]; then
  bin="$(abspath "$bin")"
fi
runs="${RUNS:-}"
if [ -z "$runs" ]; then runs="$root/runs/grpo-family"; else runs="$(abspath "$runs")"; fi
cd "$root"

settings="${SETTINGS:-reach-scratch pendulum reach-dr reach-dr-hard reach-cloned}"
algos="${ALGOS:-ppo grpo dr-grpo rloo mc-grpo spo gdpo stratified remax mc-grpo-g2 grpo-g2 grpo-dapo}"
seeds="${SEEDS:-0 1 2}"
scale="${STEPS_SCALE:-1}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"

if ! [[ "$scale" =~ ^[1-9][0-9]*$ ]]; then
  echo "STEPS_SCALE must be a positive integer, got '$scale'" >&2
  exit 2
fi
command -v jq > /dev/null || { echo "jq is needed" >&2; exit 2; }
[ -x "$bin" ] || command -v "$bin" > /dev/null || { echo "no binary at $bin (set CEREBELLUM)" >&2; exit 2; }
for s in $settings; do
  case "$s" in reach-scratch | pendulum | reach-dr | reach-dr-hard | reach-cloned) ;; *) echo "unknown setting '$s'" >&2; exit 2 ;; esac
done

steps() { local n=$(($1 / scale)); [ "$n" -ge 1 ] || n=1; echo "$n"; }
now() { date +%s.%N; }

failed=()

# run_cmd SETTING ID DIR -- ARGS...: runs "$bin ARGS" (DIR: the run directory
# it creates, or "" for none), keeps its stdout/stderr under
# $runs/SETTING/logs/ID.{stdout,log}, and on success writes
# $runs/SETTING/ID.json = {"wall_s", "command", ..., "result": <last line>}.
# Metadata for the file comes in as the JSON object in $meta.
run_cmd() {
  local setting="$1" id="$2" dir="$3"
  shift 4
  local json="$runs/$setting/$id.json" logs="$runs/$setting/logs"
  if [ -f "$json" ]; then
    echo "[$setting] $id: done"
    return 0
  fi
  mkdir -p "$logs"
  if [ -n "$dir" ] && [ -e "$dir" ]; then
    echo "[$setting] $id: removing the unfinished $dir"
    rm -rf -- "$dir"
  fi
  echo "[$setting] $id: $bin $*"
  local t0 t1 rc=0
  t0="$(now)"
  "$bin" "$@" > "$logs/$id.stdout" 2> "$logs/$id.log" || rc=$?
  t1="$(now)"
  local last
  last="$(tail -n 1 "$logs/$id.stdout")"
  if [ "$rc" -ne 0 ] || ! jq -e 'type == "object" and .ok != false and .error == null' <<< "$last" > /dev/null 2>&1; then
    local why
    why="$(grep -m 1 -i 'error' "$logs/$id.log" || tail -n 1 "$logs/$id.log")"
    echo "[$setting] $id: FAILED (exit $rc): $why" >&2
    failed+=("$setting/$id")
    return 1
  fi
  jq -c --argjson t0 "$t0" --argjson t1 "$t1" --arg cmd "$(printf '%q ' "$bin" "$@")" \
    --argjson meta "$meta" \
    '$meta + {wall_s: (($t1 - $t0) * 1000 | round / 1000), command: ($cmd | rtrimstr(" ")), result: .}' \
    <<< "$last" > "$json.tmp"
  mv "$json.tmp" "$json"
  echo "[$setting] $id: $(jq -r '"\(.wall_s) s, success \(.result.success_rate), mean return \(.result.mean_return)"' "$json")"
}

# algo_flags NAME: the --algo (and --group) flags of an algorithm name.
# NAME-dapo: with DAPO's clip-higher (0.28) and dynamic sampling.
algo_flags() {
  if [[ "$1" =~ ^(.+)-g([0-9]+)$ ]]; then
    echo "--algo ${BASH_REMATCH[1]} --group ${BASH_REMATCH[2]}"
  elif [[ "$1" =~ ^(.+)-dapo$ ]]; then
    echo "--algo ${BASH_REMATCH[1]} --clip-high 0.28 --dynamic-sampling"
  else
    echo "--algo $1"
  fi
}
algo_meta() { # NAME SEED
  local algo="$1" group=null
  if [[ "$1" =~ ^(.+)-g([0-9]+)$ ]]; then algo="${BASH_REMATCH[1]}" group="${BASH_REMATCH[2]}"; fi
  if [[ "$1" =~ ^(.+)-dapo$ ]]; then algo="${BASH_REMATCH[1]}"; fi
  jq -nc --arg name "$1" --arg algo "$algo" --argjson group "$group" --argjson seed "$2" \
    --argjson scale "$scale" '{name: $name, algo: $algo, group: $group, seed: $seed, steps_scale: $scale}'
}

for setting in $settings; do
  mkdir -p "$runs/$setting"
  dr_config="bench/reach-unseen-dr.toml"
  [ "$setting" != reach-dr-hard ] || dr_config="bench/reach-unseen-dr-hard.toml"
  if [ "$setting" = reach-dr ] || [ "$setting" = reach-dr-hard ]; then
    # The starting checkpoint: the default reach recipe (cloning + PPO,
    # 1,000,000 steps), once for all forks.
    default_flags=()
    [ "$scale" -eq 1 ] || default_flags=(--steps "$(steps 1000000)")
    meta="$(jq -nc --argjson scale "$scale" '{name: "reach-default", seed: 0, steps_scale: $scale}')"
    if ! run_cmd . reach-default "$runs/reach-default" -- \
      train --task reach --seed 0 "${default_flags[@]}" --out "$runs/reach-default" --json --timings; then
      echo "[$setting] skipped: no starting checkpoint" >&2
      continue
    fi
    # Its success under the randomisation, on each seed's held-out starts
    # (the starts the fork with that seed is evaluated on).
    for seed in $seeds; do
      meta="$(jq -nc --argjson seed "$seed" '{name: "start", algo: "start", seed: $seed}')"
      run_cmd "$setting" "start-s$seed" "" -- eval --checkpoint "$runs/reach-default" \
        --env-config "$dr_config" --episodes 400 --seed "$seed" --json || true
    done
  fi
  for seed in $seeds; do
    for name in $algos; do
      id="$name-s$seed"
      dir="$runs/$setting/$id"
      read -r -a aflags <<< "$(algo_flags "$name")"
      meta="$(algo_meta "$name" "$seed")"
      case "$setting" in
        reach-scratch)
          args=(train --task reach --config "$here/reach-scratch.toml" "${aflags[@]}" --seed "$seed"
            --steps "$(steps 300000)" --eval-episodes 400) ;;
        pendulum)
          # PPO keeps the pendulum defaults (4 envs x 1,024 ticks); a
          # critic-free learner gets 32 envs, 4 starts of G = 8 (36 for
          # G + 1 = 9) a update: 4 envs would be half of one start.
          family=()
          [ "${aflags[1]}" = ppo ] || family=(--envs 32)
          args=(train --task pendulum "${aflags[@]}" "${family[@]}" --seed "$seed"
            --steps "$(steps 200000)" --eval-episodes 20) ;;
        reach-dr | reach-dr-hard)
          args=(train --resume "$runs/reach-default" --env-config "$dr_config"
            --config "$here/reach-dr.toml" "${aflags[@]}"
            --seed "$seed" --steps "$(steps 100000)" --eval-episodes 400) ;;
        reach-cloned)
          # Fine-tuning a weak clone (reach-cloned.toml): every run clones
          # the same 100 expert episodes (per seed) first; its evaluation
          # before RL is the start row.
          args=(train --task reach --config "$here/reach-cloned.toml" "${aflags[@]}" --seed "$seed"
            --steps "$(steps 120000)" --eval-episodes 400) ;;
      esac
      run_cmd "$setting" "$id" "$dir" -- "${args[@]}" --out "$dir" --json --timings "${train_args[@]}" || true
    done
  done
done

python3 "$here/summarize.py" "$runs" | tee "$runs/summary.md"
if python3 -c 'import matplotlib' 2> /dev/null || [ -x "${VENV:-/tmp/grpo-family-venv}/bin/python" ]; then
  python3 "$here/plot.py" "$runs" || echo "plot failed" >&2
else
  echo "no plot: run bench/grpo-family/setup-plot.sh, then python3 bench/grpo-family/plot.py $runs"
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "${#failed[@]} run(s) failed (logs in $runs/<setting>/logs/): ${failed[*]}" >&2
  exit 1
fi
