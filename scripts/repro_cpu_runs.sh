#!/usr/bin/env bash
# Runs of the CPU-scale reproduction (issue: reproduce at CPU scale), one seed, one after the other:
#   bash scripts/repro_cpu_runs.sh 42 lwf_distillation gaussian_distillation experience_replay naive
#   STEPS=600 bash scripts/repro_cpu_runs.sh 42 generative_distillation generative_replay joint
#   LAM=0.5 bash scripts/repro_cpu_runs.sh 42 generative_distillation
#   TEACHER=10 TASKS=2 bash scripts/repro_cpu_runs.sh 42 generative_distillation generative_replay
# NAME is a `cpu` preset (configs/split_fmnist/cpu/NAME.yaml). Every run shares task 0 with
# runs/split_fmnist_cpu/generative_distillation_seed$SEED (scripts/repro_cpu_seed.sh trains it; no strategy
# replays or regularises in task 0, so it is the same computation) and goes to
# runs/split_fmnist_cpu/NAME[_lam$LAM][_steps$STEPS][_teacher$TEACHER]_seed$SEED. STEPS: steps per task after
# task 0 (the preset has 280); LAM: strategy.lam; TEACHER: strategy.teacher_steps (the preset has 2); TASKS: stop
# once the first TASKS tasks are finished (`cldiff train --tasks`; rerun without it to continue). One thread per
# run, mid-task checkpoints every 40 steps; rerun the same command
# after an interruption and every run resumes (finished runs are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: [STEPS=N] [LAM=X] [TEACHER=S] [TASKS=N] repro_cpu_runs.sh SEED NAME...}
shift
OUT=${OUT:-runs/split_fmnist_cpu}
CL=${CL:-.venv/bin/cldiff}
C=configs/split_fmnist/cpu
extra=() suffix=""
if [ -n "${LAM:-}" ]; then extra+=(--set strategy.lam=$LAM); suffix+="_lam$LAM"; fi
if [ -n "${STEPS:-}" ]; then extra+=(--set train.steps_per_task=$STEPS); suffix+="_steps$STEPS"; fi
if [ -n "${TEACHER:-}" ]; then extra+=(--set strategy.teacher_steps=$TEACHER); suffix+="_teacher$TEACHER"; fi
if [ -n "${TASKS:-}" ]; then extra+=(--tasks "$TASKS"); fi
for NAME in "$@"; do
  $CL train --config $C/$NAME.yaml --out "$OUT/${NAME}${suffix}_seed$SEED" \
    --no-progress --resume --set seed=$SEED --set train.threads=1 --set train.checkpoint_every=40 \
    --set train.init_from="$OUT/generative_distillation_seed$SEED" "${extra[@]}" \
    >> "$OUT/log_${NAME}${suffix}_$SEED.txt" 2>&1
done
