#!/usr/bin/env bash
# The `quick` presets (the main job's GR-vs-GD comparison) on several class orders, with the training recipe (the
# presets as they are) and without it (recipe fields switched off): the paper's orders of seeds 42 and 1714 and the
# random order of seed 1. One process at a time, THREADS torch threads (default 1), every run resumable.
#   bash docs/results/split_fmnist_quick_recipe/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs/split_fmnist_quick_recipe}
CL=${CL:-cldiff}
Q=configs/split_fmnist/quick
mkdir -p "$RUNS"
off=(--set train.ema_decay=null --set train.lr_schedule=constant --set train.warmup_steps=0
     --set train.loss_weighting=none)
pair() {  # pair NAME ARGS...: GD, then GR from GD's task 0
  local name=$1
  shift
  # the `quick` presets' settings when these runs were made (32x32, batch 64, task 0 200 steps, later tasks 60,
  # one replay sample per real image)
  local c=(--no-progress --resume --set train.threads="${THREADS:-1}" --set data.image_size=32 --set train.batch_size=64
           --set train.first_task_steps=200 --set train.steps_per_task=60 --set strategy.replay_ratio=1 "$@")
  $CL train --config $Q/generative_distillation.yaml --out "$RUNS/${name}_gd" "${c[@]}" >> "$RUNS/${name}_gd.log" 2>&1
  $CL train --config $Q/generative_replay.yaml --out "$RUNS/${name}_gr" --set train.init_from="$RUNS/${name}_gd" \
    "${c[@]}" >> "$RUNS/${name}_gr.log" 2>&1
}
pair recipe_seed42 --set seed=42
pair recipe_seed1714 --set seed=1714
pair recipe_random_seed1 --set seed=1 --set data.class_order=random
pair base_seed1714 --set seed=1714 "${off[@]}"
pair base_random_seed1 --set seed=1 --set data.class_order=random "${off[@]}"
pair base_seed42 --set seed=42 "${off[@]}"
