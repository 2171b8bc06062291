#!/usr/bin/env bash
# The lambda sweep of generative distillation at CPU scale (issue: reproduce at CPU scale), on one seed:
#   bash scripts/repro_cpu_lambda.sh 42 0.5 0.25
# Each run shares task 0 with runs/split_fmnist_cpu/generative_distillation_seed$SEED (scripts/repro_cpu_seed.sh
# trains it) and goes to runs/split_fmnist_cpu/generative_distillation_lam${LAM}_seed$SEED. One thread per run;
# mid-task checkpoints every 40 steps; rerun the same command after an interruption and every run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: repro_cpu_lambda.sh SEED LAMBDA...}
shift
OUT=${OUT:-runs/split_fmnist_cpu}
CL=${CL:-.venv/bin/cldiff}
C=configs/split_fmnist/cpu
for LAM in "$@"; do
  $CL train --config $C/generative_distillation.yaml --out "$OUT/generative_distillation_lam${LAM}_seed$SEED" \
    --no-progress --resume --set seed=$SEED --set train.threads=1 --set train.checkpoint_every=40 \
    --set train.init_from="$OUT/generative_distillation_seed$SEED" --set strategy.lam=$LAM \
    >> "$OUT/log_gd_lam${LAM}_$SEED.txt" 2>&1
done
