#!/usr/bin/env bash
# The training recipe (docs/recipe.md) on the paper's UNet, on one GPU: generative distillation (GD), generative
# replay (GR) and joint training, each with and without the recipe, seed SEED, side by side.
#   paper presets (42.9 M UNet, batch 128, Adam 2e-4), 94 x EPOCHS steps per task (the paper: 100 epochs), 2,000
#   evaluation samples; joint trains twice the steps in later tasks (GD's 128 real + 128 replayed images per step).
#   recipe: EMA 0.999 (teacher from the EMA), cosine learning rate with a 5 % warm-up, min-SNR-5 loss weighting.
# Beside them, task 0 in fp32 (the paper's precision) against the bf16 autocast of the presets (#19, item 4).
#   bash docs/results/split_fmnist_gpu_recipe/run.sh 42          # EPOCHS=3 by default
# Rerun after an interruption: every run resumes. EXTRA: more --set overrides (a tiny model to try it on a CPU).
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED=${1:?usage: [EPOCHS=N] [RUNS=DIR] run.sh SEED}
EPOCHS=${EPOCHS:-3}
RUNS=${RUNS:-runs/split_fmnist_gpu_recipe}
CL=${CL:-cldiff}
P=configs/split_fmnist/paper
steps=$((94 * EPOCHS))
mkdir -p "$RUNS"
# shellcheck disable=SC2206
extra=(${EXTRA:-})
common=(--no-progress --resume --set seed="$SEED" --set train.threads=2 --set train.steps_per_task=$steps
        --set eval.n_samples=2000 --set eval.batch_size=1000)
recipe=(--set train.ema_decay=0.999 --set train.lr_schedule=cosine --set train.warmup_steps=$((steps / 20))
        --set train.loss_weighting=min_snr --set train.min_snr_gamma=5)

run() {  # run FOLDER ARGS...: one `cldiff train`, its output appended to FOLDER.log
  local out=$1
  shift
  $CL train --out "$out" "${common[@]}" "$@" "${extra[@]}" >> "$out.log" 2>&1
}

group() {  # group TAG [--set ...]: GD's task 0, then GD, GR and joint continuing from it side by side
  local tag=$1
  shift
  local first=$RUNS/${tag}_gd_ep${EPOCHS}_seed$SEED pids=() rc=0
  run "$first" --config $P/generative_distillation.yaml "$@" --tasks 1
  run "$first" --config $P/generative_distillation.yaml "$@" & pids+=($!)
  run "$RUNS/${tag}_gr_ep${EPOCHS}_seed$SEED" --config $P/generative_replay.yaml "$@" \
    --set train.init_from="$first" & pids+=($!)
  run "$RUNS/${tag}_joint_ep${EPOCHS}_seed$SEED" --config $P/joint.yaml "$@" --set train.steps_per_task=$((2 * steps)) \
    --set train.first_task_steps=$steps --set train.init_from="$first" & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  return $rc
}

group plain & g1=$!
group recipe "${recipe[@]}" & g2=$!
run "$RUNS/fp32_task0_ep${EPOCHS}_seed$SEED" --config $P/generative_distillation.yaml --set train.precision=fp32 \
  --tasks 1 & g3=$!
rc=0
for g in $g1 $g2 $g3; do wait "$g" || rc=$?; done
exit $rc
