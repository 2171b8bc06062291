#!/usr/bin/env bash
# The classifier after task 1 against its replay generator's quality: the `cpu` preset's task 0 (the model that
# task 1 of the classifier replays from) trained for several budgets, then the classifier of docs/protocol.md §5
# (5 epochs, a pool of 2,000 replayed images) on tasks 0 and 1 only (`cldiff classify --tasks 2`: task 1 needs only
# the task-0 checkpoint). References without a generator on the same data: `joint` (real images of both tasks)
# and `real_replay` (task 0's real images replayed through the same distillation loss).
#   bash docs/results/split_fmnist_classifier_curve/run.sh [SEED]      # default 42; one thread, resumable
#   python docs/results/split_fmnist_classifier_curve/table.py         # the table and curve.png
# The 810-step model is the `cpu` preset's own task 0: taken from the `cpu` sweep's GD run of the seed when it
# exists (train.init_from, checked to be the same computation), trained here otherwise.
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED=${1:-42}
RUNS=${RUNS:-runs/split_fmnist_classifier_curve}
CL=${CL:-cldiff}
THREADS=${THREADS:-1}
CLF=(--set classifier.epochs=5 --set classifier.replay_pool=2000 --threads "$THREADS")
SWEEP_GD=runs/sweeps/split_fmnist_cpu/fashion_mnist_generative_distillation_lam1.0_teacher_steps2_small_seed$SEED
mkdir -p "$RUNS"
steps_list=(810 270 100 30)
for steps in "${steps_list[@]}"; do
  out="$RUNS/steps${steps}_seed$SEED"
  extra=()
  if [ "$steps" = 810 ] && [ -f "$SWEEP_GD/checkpoints/task_00.json" ] && [ ! -d "$out" ]; then
    extra=(--set "train.init_from=$SWEEP_GD")
  fi
  [ -f "$out/checkpoints/task_00.json" ] || $CL train --config configs/split_fmnist/cpu/generative_distillation.yaml \
    --out "$out" --no-progress --tasks 1 --resume --set seed="$SEED" --set train.first_task_steps="$steps" \
    --set train.threads="$THREADS" --set strategy.lam=1.0 "${extra[@]}"
done
first="$RUNS/steps810_seed$SEED"
# the classifier's task 0 trains on real images only: the same in every folder (same seed, data and settings),
# so it is trained once and its state copied; the task-1 step then differs only in the generator
stash="$RUNS/classifier_task0_seed$SEED"
if [ ! -f "$stash/classifier_state.pt" ]; then
  $CL classify "$first" "${CLF[@]}" --tasks 1
  rm -rf "$stash.tmp" && mkdir -p "$stash.tmp" && cp "$first/classifier.jsonl" "$first/classifier_state.pt" "$stash.tmp/" && mv "$stash.tmp" "$stash"
fi
for steps in "${steps_list[@]:1}"; do
  out="$RUNS/steps${steps}_seed$SEED"
  [ -f "$out/classifier_state.pt" ] || cp "$stash/classifier.jsonl" "$stash/classifier_state.pt" "$out/"
done
for steps in "${steps_list[@]}"; do
  $CL classify "$RUNS/steps${steps}_seed$SEED" "${CLF[@]}" --tasks 2
done
for mode in joint real_replay; do   # no generator: a copy of the run folder, so its own classifier files
  ref="$RUNS/${mode}_seed$SEED"
  [ -d "$ref" ] || { mkdir -p "$ref/checkpoints"; cp "$first/config.yaml" "$first/metrics.jsonl" "$ref/";
                     cp "$first"/checkpoints/task_00.* "$ref/checkpoints/"; }
  $CL classify "$ref" "${CLF[@]}" --set classifier.mode=$mode --tasks 2
done
