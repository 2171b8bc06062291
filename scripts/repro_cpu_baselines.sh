#!/usr/bin/env bash
# The other baselines of the CPU-scale reproduction (issue: reproduce at CPU scale), on one seed:
#   bash scripts/repro_cpu_baselines.sh 42 lwf_distillation gaussian_distillation experience_replay naive
# Each named `cpu` preset (configs/split_fmnist/cpu/NAME.yaml) shares task 0 with
# runs/split_fmnist_cpu/generative_distillation_seed$SEED (scripts/repro_cpu_seed.sh trains it; no strategy
# replays or regularises in task 0, so it is the same computation) and goes to
# runs/split_fmnist_cpu/NAME_seed$SEED, one after the other, one thread each. Mid-task checkpoints every 40
# steps; rerun the same command after an interruption and every run resumes (finished runs are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: repro_cpu_baselines.sh SEED NAME...}
shift
OUT=${OUT:-runs/split_fmnist_cpu}
CL=${CL:-.venv/bin/cldiff}
C=configs/split_fmnist/cpu
for NAME in "$@"; do
  $CL train --config $C/$NAME.yaml --out "$OUT/${NAME}_seed$SEED" \
    --no-progress --resume --set seed=$SEED --set train.threads=1 --set train.checkpoint_every=40 \
    --set train.init_from="$OUT/generative_distillation_seed$SEED" \
    >> "$OUT/log_${NAME}_$SEED.txt" 2>&1
done
