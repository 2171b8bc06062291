#!/usr/bin/env bash
# Class-conditional against unconditional GD and GR at the `quick` scale (3 tasks, small UNet, task 0 200 steps
# shared by GD and GR, later tasks 60 steps, 500 evaluation samples), on three class orders: the paper's orders
# of seeds 42 and 1714 and the random order of seed 1. The conditional pairs use configs/split_fmnist/
# quick_conditional/. The unconditional pairs are the `quick` presets' runs of
# docs/results/split_fmnist_quick_recipe/ (the same settings and class orders), whose final checkpoints
# per_class.py scores again for the per-class metrics; UNCOND=1 instead trains them afresh here.
# One process at a time, THREADS torch threads (default 1), every run resumable.
#   bash docs/results/split_fmnist_quick_recipe/run.sh        # the unconditional runs, if not there yet
#   bash docs/results/split_fmnist_conditional_quick/run.sh
#   python docs/results/split_fmnist_conditional_quick/per_class.py runs/split_fmnist_quick_recipe/recipe_*_g?
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs/split_fmnist_conditional_quick}
CL=${CL:-cldiff}
mkdir -p "$RUNS"
# the `quick` presets' settings when these runs were made (32x32, batch 64, task 0 200 steps, later tasks 60, one
# replay sample per real image), the same as the unconditional runs they are compared with
PIN=(--set data.image_size=32 --set train.batch_size=64 --set train.first_task_steps=200 --set train.steps_per_task=60
     --set strategy.replay_ratio=1)
pair() {  # pair PRESET NAME ARGS...: GD, then GR from GD's task 0
  local q=configs/split_fmnist/$1 name=$2
  shift 2
  local c=(--no-progress --resume --set train.threads="${THREADS:-1}" "${PIN[@]}" "$@")
  $CL train --config "$q/generative_distillation.yaml" --out "$RUNS/${name}_gd" "${c[@]}" >> "$RUNS/${name}_gd.log" 2>&1
  $CL train --config "$q/generative_replay.yaml" --out "$RUNS/${name}_gr" --set train.init_from="$RUNS/${name}_gd" \
    "${c[@]}" >> "$RUNS/${name}_gr.log" 2>&1
}
for o in "42:paper" "1714:paper" "1:random"; do
  pair quick_conditional "cond_seed${o%%:*}_${o##*:}" --set seed="${o%%:*}" --set data.class_order="${o##*:}"
done
[ "${UNCOND:-0}" = 1 ] || exit 0
for o in "42:paper" "1714:paper" "1:random"; do
  pair quick "uncond_seed${o%%:*}_${o##*:}" --set seed="${o%%:*}" --set data.class_order="${o##*:}"
done
