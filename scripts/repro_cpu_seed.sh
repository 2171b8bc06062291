#!/usr/bin/env bash
# Reproduction at CPU scale for one seed (issue: reproduce at CPU scale).
# Two processes with one thread each: generative distillation trains task 0
# once; generative replay reuses it (train.init_from) as soon as it exists;
# then joint and naive, which also reuse it. Mid-task checkpoints every 40
# steps; rerun the same command after an interruption and every run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-42}
OUT=${OUT:-runs/split_fmnist_cpu}
CL=${CL:-.venv/bin/cldiff}
C=configs/split_fmnist/cpu
mkdir -p "$OUT"
common=(--no-progress --resume --set seed=$SEED --set train.threads=1 --set train.checkpoint_every=40)
run() { local name=$1; shift; $CL train --config $C/$name.yaml --out "$OUT/${name}_seed$SEED" "${common[@]}" "$@"; }
run generative_distillation >> "$OUT/log_gd_$SEED.txt" 2>&1 &
gd=$!
until [ -f "$OUT/generative_distillation_seed$SEED/checkpoints/task_00.json" ]; do
  sleep 20; kill -0 $gd 2>/dev/null || break
done
share=(--set train.init_from="$OUT/generative_distillation_seed$SEED")
run generative_replay "${share[@]}" >> "$OUT/log_gr_$SEED.txt" 2>&1
wait $gd
run joint "${share[@]}" >> "$OUT/log_joint_$SEED.txt" 2>&1 &
run naive "${share[@]}" >> "$OUT/log_naive_$SEED.txt" 2>&1
wait
