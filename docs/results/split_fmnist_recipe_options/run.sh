#!/usr/bin/env bash
# Each option of the training recipe (docs/recipe.md) alone, then all together, at the `cpu` presets' scale (small
# UNet, batch 64, task 0 600 steps, later tasks 280, joint 600, 1,000 evaluation samples), seed SEED, the first
# TASKS tasks (default 3: "after task 0" and "after task 2"). Every option costs (next to) nothing per step, so equal
# steps are equal compute. Per option: task 0 once (GD's), then GD and joint continuing from it side by side;
# generative replay too for the preset ("base") and the whole recipe ("all").
#   bash docs/results/split_fmnist_recipe_options/run.sh 42
# Rerun after an interruption: every run resumes. THREADS: torch threads per run (default 1); EXTRA: more --set
# overrides (a tiny model to try it quickly).
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED=${1:?usage: [TASKS=N] [RUNS=DIR] run.sh SEED}
TASKS=${TASKS:-3}
RUNS=${RUNS:-runs/split_fmnist_recipe_options}
CL=${CL:-cldiff}
C=configs/split_fmnist/cpu
mkdir -p "$RUNS"
# shellcheck disable=SC2206
extra=(${EXTRA:-})
common=(--no-progress --resume --set seed="$SEED" --set train.threads="${THREADS:-1}" --set data.num_tasks="$TASKS"
        --set data.image_size=32 --set train.first_task_steps=600  # the `cpu` presets as they were then:
        --set train.ema_decay=null --set train.lr_schedule=constant --set train.warmup_steps=0  # 32x32, no recipe
        --set train.loss_weighting=none)
steps=(--set train.steps_per_task=280)  # GD and GR; joint 600

run() {  # run FOLDER ARGS...: one `cldiff train`, its output appended to FOLDER.log
  local out=$1
  shift
  $CL train --out "$out" "${common[@]}" "$@" "${extra[@]}" >> "$out.log" 2>&1
}

option() {  # option NAME [--set ...]
  local name=$1
  shift
  local first=$RUNS/${name}_gd_seed$SEED pids=() rc=0
  run "$first" --config $C/generative_distillation.yaml "${steps[@]}" "$@" --tasks 1
  run "$first" --config $C/generative_distillation.yaml "${steps[@]}" "$@" & pids+=($!)
  run "$RUNS/${name}_joint_seed$SEED" --config $C/joint.yaml --set train.steps_per_task=600 "$@" \
    --set train.init_from="$first" & pids+=($!)
  if [ "$name" = base ] || [ "$name" = all ]; then
    run "$RUNS/${name}_gr_seed$SEED" --config $C/generative_replay.yaml "${steps[@]}" "$@" --set train.init_from="$first" & pids+=($!)
  fi
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  return $rc
}

ema=(--set train.ema_decay=0.999)
cosine=(--set train.lr_schedule=cosine --set train.warmup_steps=20)
minsnr=(--set train.loss_weighting=min_snr --set train.min_snr_gamma=5)
pids=()
option base & pids+=($!)
option ema "${ema[@]}" & pids+=($!)
option cosine "${cosine[@]}" & pids+=($!)
option minsnr "${minsnr[@]}" & pids+=($!)
option all "${ema[@]}" "${cosine[@]}" "${minsnr[@]}" & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
