#!/usr/bin/env bash
# Task 0 of a preset on five class orders, with the levers that buy quality per CPU-minute. PRESET=quick (default):
#   a  the preset as it was when this ran (32x32, 200 steps)
#   b  28x28 images (the data's own size; 1.35x the training images per second here) for 270 steps, the same time
#   c  as b with lr 2e-3
#   d  32x32, 400 steps (twice the time: how far more steps alone go)
#   e  as b with batch 32 for 485 steps, meant as the same time: a batch-32 step cost 0.557x a batch-64 one on the EPYC
#      (125.6 against 140.0 images/s, docs/results/bench/COMMAND.md), so 270 / 0.557 steps
#   f  as e for 445 steps: measured alone beside b (2 threads), e's 485 steps took 1.09x b's training time
# PRESET=cpu (runs in runs/split_fmnist_cpu_task0, the table in docs/results/split_fmnist_cpu_task0/):
#   a  32x32, 600 steps (the `cpu` presets)
#   b  28x28, 810 steps (the same time)
#   c  as b with batch 32 for 1454 steps (810 / 0.557, meant as the same time; at the `quick` scale 0.557 gave 1.09x)
# Task 0 only (data.num_tasks=1), the preset's evaluation samples. One process at a time, THREADS torch threads
# (default 1), every run resumable. Arguments: the variants to run, in order (default: all of the preset's); two
# processes side by side: `run.sh a & run.sh b; wait`. The later tasks' steps (train.steps_per_task) are pinned at
# the value the preset had when the runs were made: they do not change a task-0-only run, but a resumed run must
# have its own settings (so is the batch, 64 in the `quick` presets then). ORDERS (optional) replaces the preset's class orders, for example ORDERS="1714:paper 1:random".
#   bash docs/results/split_fmnist_quick_task0/run.sh
#   PRESET=cpu bash docs/results/split_fmnist_quick_task0/run.sh a & PRESET=cpu bash docs/results/split_fmnist_quick_task0/run.sh b
set -euo pipefail
cd "$(dirname "$0")/../../.."
PRESET=${PRESET:-quick}
RUNS=${RUNS:-runs/split_fmnist_${PRESET}_task0}
CL=${CL:-cldiff}
mkdir -p "$RUNS"
declare -A V
case $PRESET in
  quick) later=60; orders=("42:paper" "69:paper" "1714:paper" "1:random" "2:random")
    V[a]="data.image_size=32 train.first_task_steps=200 train.batch_size=64"
    V[b]="data.image_size=28 train.first_task_steps=270 train.batch_size=64"
    V[c]="data.image_size=28 train.first_task_steps=270 train.lr=2e-3 train.batch_size=64"
    V[d]="data.image_size=32 train.first_task_steps=400 train.batch_size=64"
    V[e]="data.image_size=28 train.first_task_steps=485 train.batch_size=32"
    V[f]="data.image_size=28 train.first_task_steps=445 train.batch_size=32" ;;
  cpu) later=280; orders=("42:paper" "1714:paper" "1:random" "69:paper" "2:random")
    V[a]="data.image_size=32 train.first_task_steps=600"; V[b]="data.image_size=28 train.first_task_steps=810"
    V[c]="data.image_size=28 train.first_task_steps=1454 train.batch_size=32" ;;
  *) echo "PRESET must be quick or cpu, got $PRESET" >&2; exit 2 ;;
esac
[ -z "${ORDERS:-}" ] || read -r -a orders <<< "$ORDERS"
todo=("$@")
[ $# -gt 0 ] || mapfile -t todo < <(printf '%s\n' "${!V[@]}" | sort)
for v in "${todo[@]}"; do
  [ -n "${V[$v]:-}" ] || { echo "unknown variant $v for PRESET=$PRESET: one of ${!V[*]}" >&2; exit 2; }
  sets=()
  for kv in ${V[$v]}; do sets+=(--set "$kv"); done
  for o in "${orders[@]}"; do
    name="${v}_seed${o%%:*}_${o##*:}"
    $CL train --config "configs/split_fmnist/$PRESET/generative_distillation.yaml" --out "$RUNS/$name" --no-progress \
      --resume --set train.threads="${THREADS:-1}" --set data.num_tasks=1 --set train.steps_per_task=$later \
      --set seed="${o%%:*}" --set data.class_order="${o##*:}" "${sets[@]}" >> "$RUNS/$name.log" 2>&1
  done
done
