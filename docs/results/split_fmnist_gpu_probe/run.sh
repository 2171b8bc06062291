#!/usr/bin/env bash
# The reproduction at a larger scale than the `cpu` preset, for a GPU: the paper's protocol
# (configs/split_fmnist/paper: its 42.9 M UNet, batch 128, Adam 2e-4, 10,000 evaluation samples at 10 DDIM
# steps) with EPOCHS epochs per task instead of the paper's 100, one seed: generative distillation, generative
# replay and joint, with the classifier (the paper's 20 epochs; replay from a pool of 2,000 images per task
# instead of fresh replay every iteration). Task 0 is trained once, in the GD run, and shared (train.init_from);
# then the three runs train side by side on the one GPU.
#   bash docs/results/split_fmnist_gpu_probe/run.sh 42                  # EPOCHS=10 by default
#   EPOCHS=100 bash docs/results/split_fmnist_gpu_probe/run.sh 42       # the paper's budget
# Runs go to $RUNS/NAME_ep$EPOCHS_seed$SEED (RUNS defaults to runs/split_fmnist_gpu), logs beside them. Rerun the
# same command after an interruption: every run resumes from its newest end-of-task checkpoint.
# EXTRA: more `--set` overrides for every run (e.g. a tiny model to try the script on a CPU).
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED=${1:?usage: [EPOCHS=N] [RUNS=DIR] repro_gpu_probe.sh SEED}
EPOCHS=${EPOCHS:-10}
RUNS=${RUNS:-runs/split_fmnist_gpu}
CL=${CL:-cldiff}
C=configs/split_fmnist/paper
mkdir -p "$RUNS"
# shellcheck disable=SC2206
extra=(${EXTRA:-})
common=(--no-progress --resume --set seed="$SEED" --set train.epochs_per_task="$EPOCHS" --set eval.batch_size=1000
        --set classifier.enabled=true --set classifier.replay_pool=2000 "${extra[@]}")
sfx="_ep${EPOCHS}_seed$SEED"
first="$RUNS/generative_distillation$sfx"
$CL train --config $C/generative_distillation.yaml --out "$first" "${common[@]}" --tasks 1 \
  >> "$RUNS/log_generative_distillation$sfx.txt" 2>&1
pids=()
$CL train --config $C/generative_distillation.yaml --out "$first" "${common[@]}" \
  >> "$RUNS/log_generative_distillation$sfx.txt" 2>&1 &
pids+=($!)
for NAME in generative_replay joint; do
  $CL train --config $C/$NAME.yaml --out "$RUNS/$NAME$sfx" "${common[@]}" --set train.init_from="$first" \
    >> "$RUNS/log_$NAME$sfx.txt" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
