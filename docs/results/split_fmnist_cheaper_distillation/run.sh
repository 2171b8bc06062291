#!/usr/bin/env bash
# Cheaper distillation at the `quick` scale (3 tasks, small UNet, later tasks 60 steps, 500 evaluation samples):
# trajectory distillation, replay timestep rules and a smaller replay batch against generative distillation.
# Every run starts from the task 0 of the `quick` GD run of its seed in docs/results/split_fmnist_quick_recipe/
# (train.init_from; RECIPE_RUNS names that folder), so only tasks 1 and 2 are trained here. One process at a
# time, THREADS torch threads (default 1), every run resumable.
#   bash docs/results/split_fmnist_quick_recipe/run.sh        # first, for the GD and GR runs it shares
#   bash docs/results/split_fmnist_cheaper_distillation/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs/split_fmnist_cheaper_distillation}
RECIPE_RUNS=${RECIPE_RUNS:-runs/split_fmnist_quick_recipe}
CL=${CL:-cldiff}
Q=configs/split_fmnist/quick/generative_distillation.yaml
mkdir -p "$RUNS"
# the `quick` presets' settings when the runs shared here were made (32x32, batch 64, task 0 200 steps, later tasks
# 60, one replay sample per real image; a run's own `strategy={...}` replaces the last)
PIN=(--set data.image_size=32 --set train.batch_size=64 --set train.first_task_steps=200 --set train.steps_per_task=60
     --set strategy.replay_ratio=1)
one() {  # one NAME SEEDNAME SEEDARGS... -- STRATEGY
  local name=$1 src=$2
  shift 2
  $CL train --config $Q --out "$RUNS/$name" --no-progress --resume --set train.threads="${THREADS:-1}" \
    --set train.init_from="$RECIPE_RUNS/${src}_gd" "${PIN[@]}" "$@" >> "$RUNS/$name.log" 2>&1
}
ORDERS=("42:paper:recipe_seed42" "1714:paper:recipe_seed1714" "1:random:recipe_random_seed1")
for o in "${ORDERS[@]}"; do  # trajectory distillation on every order first
  IFS=: read -r seed order src <<< "$o"
  s=(--set seed="$seed" --set data.class_order="$order")
  one "traj_s4_states3_seed${seed}_$order" "$src" "${s[@]}" \
    --set "strategy={name: trajectory_distillation, teacher_steps: 4, states: 3}"
  one "traj_s2_states2_seed${seed}_$order" "$src" "${s[@]}" \
    --set "strategy={name: trajectory_distillation, teacher_steps: 2, states: 2}"
done
IFS=: read -r seed order src <<< "${ORDERS[0]}"  # then the other levers, on seed 42
s=(--set seed="$seed" --set data.class_order="$order")
one "traj_s2_states1_seed${seed}_$order" "$src" "${s[@]}" \
  --set "strategy={name: trajectory_distillation, teacher_steps: 2, states: 1}"
one "gd_ratio0.5_seed${seed}_$order" "$src" "${s[@]}" --set strategy.replay_ratio=0.5
one "gd_snr_seed${seed}_$order" "$src" "${s[@]}" --set strategy.replay_timesteps=snr
one "gd_adaptive_seed${seed}_$order" "$src" "${s[@]}" --set strategy.replay_timesteps=adaptive
one "gd_pool8_seed${seed}_$order" "$src" "${s[@]}" --set strategy.pool_every=8
one "experience_replay_seed${seed}_$order" "$src" "${s[@]}" --set "strategy={name: experience_replay}"
