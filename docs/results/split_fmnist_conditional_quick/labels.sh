#!/usr/bin/env bash
# How fast a conditional model learns its labels: task 0 of the conditional GD runs of run.sh (same settings, same
# run folders' naming, `--tasks 1`, so a run can later go on to the 3rd task with --resume), with the label
# embedding started at N(0, 0.1^2) instead of zeros, or learning at 30x the rate. Compared with run.sh's own runs
# (zeros, 1x) and the N(0, 1) start measured before. One process, THREADS torch threads (default 1), resumable.
# TASKS=3 continues the runs to the 3rd task (VARIANTS: which, default both), with GR from their task 0 (GR=1).
#   bash docs/results/split_fmnist_conditional_quick/labels.sh
#   TASKS=3 VARIANTS=init0.1 GR=1 bash docs/results/split_fmnist_conditional_quick/labels.sh
#   python docs/results/split_fmnist_conditional_quick/labels.py      # the table in COMMAND.md
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs/split_fmnist_conditional_quick}
CL=${CL:-cldiff}
mkdir -p "$RUNS"
PIN=(--set data.image_size=32 --set train.batch_size=64 --set train.first_task_steps=200 --set train.steps_per_task=60)  # the presets then
declare -A SET=([init0.1]=model.label_init_std=0.1 [lr30]=model.label_lr_scale=30)
for o in "42:paper" "1714:paper"; do
  for v in ${VARIANTS:-init0.1 lr30}; do
    name="cond_seed${o%%:*}_${o##*:}_${v}"
    c=(--no-progress --resume --set train.threads="${THREADS:-1}" "${PIN[@]}" --set "${SET[$v]}"
       --set seed="${o%%:*}" --set data.class_order="${o##*:}")
    $CL train --config configs/split_fmnist/quick_conditional/generative_distillation.yaml --out "$RUNS/${name}_gd" \
      --tasks "${TASKS:-1}" "${c[@]}" >> "$RUNS/${name}_gd.log" 2>&1
    [ "${GR:-0}" = 1 ] || continue
    $CL train --config configs/split_fmnist/quick_conditional/generative_replay.yaml --out "$RUNS/${name}_gr" \
      --tasks "${TASKS:-1}" --set train.init_from="$RUNS/${name}_gd" "${c[@]}" >> "$RUNS/${name}_gr.log" 2>&1
  done
done
