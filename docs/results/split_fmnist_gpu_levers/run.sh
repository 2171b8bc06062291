#!/usr/bin/env bash
# Two levers of the reproduction taken to the 5th task on one GPU, one seed, in one go (the CPU runs never reached
# it for these two):
#  1. teacher steps: the `cpu` presets (small UNet, 600 + 280 steps of 64) with generative distillation and
#     generative replay at 2 teacher DDIM steps (the presets) and at 10, all four continuing from one shared
#     task 0 (the GD preset's, `--tasks 1`, then `train.init_from`). The preset pair is rerun here so that the
#     lever is compared on the same device.
#  2. model size: the `paper` presets (the paper's 42.9 M UNet, batch 128, Adam 2e-4) with 94 x EPOCHS steps per task
#     (EPOCHS epochs; the paper has 100) and 2,000 evaluation samples (the paper 10,000): GD, GR and joint from one shared task 0.
#     Joint trains 2 x 94 x EPOCHS steps of 128 per later task: as many images as GD's 128 real + 128 replayed per
#     step (the `cpu` joint preset's rule), not the paper's epochs over every image seen so far.
# The two groups run side by side; every run is its own process (one GPU is far from busy with one of them).
#   bash docs/results/split_fmnist_gpu_levers/run.sh 42                 # EPOCHS=4 by default
# Runs go to $RUNS/{cpu,paper}_NAME..._seed$SEED (RUNS defaults to runs/split_fmnist_gpu_levers), logs beside them.
# Rerun the same command after an interruption: every run resumes from its newest checkpoint.
# EXTRA_CPU / EXTRA_PAPER: more `--set` overrides for the two groups (e.g. a tiny model to try the script on a CPU).
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED=${1:?usage: [EPOCHS=N] [RUNS=DIR] repro_gpu_levers.sh SEED}
EPOCHS=${EPOCHS:-4}
RUNS=${RUNS:-runs/split_fmnist_gpu_levers}
CL=${CL:-cldiff}
C=configs/split_fmnist/cpu
P=configs/split_fmnist/paper
mkdir -p "$RUNS"
# shellcheck disable=SC2206
xc=(${EXTRA_CPU:-})
# shellcheck disable=SC2206
xp=(${EXTRA_PAPER:-})
common=(--no-progress --resume --set seed="$SEED" --set train.threads=2)
# the `cpu` presets as they were for these runs: before the training recipe (docs/recipe.md), 32x32
xc=(--set train.ema_decay=null --set train.lr_schedule=constant --set train.warmup_steps=0
    --set train.loss_weighting=none --set data.image_size=32 --set train.first_task_steps=600
    --set train.steps_per_task=280 "${xc[@]}")
steps=${STEPS:-$((94 * EPOCHS))}  # STEPS overrides; the paper's 94 iterations per epoch (12,000 images, batch 128)
paper=(--set train.steps_per_task=$steps --set eval.n_samples=2000 --set eval.batch_size=1000)

run() {  # run FOLDER LOGNAME ARGS...: one `cldiff train`, its output appended to the log beside the runs
  local out=$1 log=$2
  shift 2
  $CL train --out "$out" "${common[@]}" "$@" >> "$RUNS/log_$log.txt" 2>&1
}

cpu_group() {
  local first=$RUNS/cpu_generative_distillation_seed$SEED
  run "$first" cpu_generative_distillation_$SEED --config $C/generative_distillation.yaml "${xc[@]}" --tasks 1
  local pids=() rc=0
  run "$first" cpu_generative_distillation_$SEED --config $C/generative_distillation.yaml "${xc[@]}" & pids+=($!)
  run "$RUNS/cpu_generative_replay_seed$SEED" cpu_generative_replay_$SEED --config $C/generative_replay.yaml \
    --set train.init_from="$first" "${xc[@]}" & pids+=($!)
  for NAME in generative_distillation generative_replay; do
    run "$RUNS/cpu_${NAME}_teacher10_seed$SEED" "cpu_${NAME}_teacher10_$SEED" --config $C/$NAME.yaml \
      --set strategy.teacher_steps=10 --set train.init_from="$first" "${xc[@]}" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  return $rc
}

paper_group() {
  local sfx=_ep${EPOCHS}_seed$SEED
  local first=$RUNS/paper_generative_distillation$sfx
  run "$first" paper_generative_distillation$sfx --config $P/generative_distillation.yaml "${paper[@]}" "${xp[@]}" \
    --tasks 1
  local pids=() rc=0
  run "$first" paper_generative_distillation$sfx --config $P/generative_distillation.yaml "${paper[@]}" "${xp[@]}" \
    & pids+=($!)
  run "$RUNS/paper_generative_replay$sfx" paper_generative_replay$sfx --config $P/generative_replay.yaml \
    "${paper[@]}" --set train.init_from="$first" "${xp[@]}" & pids+=($!)
  run "$RUNS/paper_joint$sfx" paper_joint$sfx --config $P/joint.yaml "${paper[@]}" \
    --set train.steps_per_task=$((2 * steps)) --set train.first_task_steps=$steps --set train.init_from="$first" \
    "${xp[@]}" & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  return $rc
}

cpu_group & g1=$!
paper_group & g2=$!
rc=0
wait $g1 || rc=$?
wait $g2 || rc=$?
exit $rc
