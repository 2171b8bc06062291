#!/usr/bin/env bash
# Class-conditional GD and GR at the `cpu` scale (configs/split_fmnist/cpu_conditional/), one seed:
#  1. task 0 (--tasks 1) with the label embedding started at zeros (the presets before), at N(0, 0.1^2)
#     (model.label_init_std=0.1, the presets' start now) and at zeros learning at 30x the rate
#     (model.label_lr_scale=30); each variant sets its start explicitly;
#  2. the 5 tasks of GD (its task-0 run continued) and GR (from GD's task 0) for the settings in FULL (default
#     init0.1, the one that made the model use its labels).
# The runs evaluate at guidance 1 after every task (the presets' scale when they were made; the presets now
# evaluate at 1.5), so that every run of this folder resumes with the settings it started with; the guided
# figures come from `cldiff evaluate RUN --guidance G` (COMMAND.md).
# One process, THREADS torch threads (default 1); resumable: run it again after an interruption. Two seeds can
# run side by side with THREADS=1 each.
#   bash docs/results/split_fmnist_cpu_conditional/run.sh 69
#   STEP=1 bash docs/results/split_fmnist_cpu_conditional/run.sh 1714      # task 0 only
#   python docs/results/split_fmnist_cpu_conditional/table.py runs/sweeps 69
set -euo pipefail
cd "$(dirname "$0")/../../.."
SEED=${1:?usage: run.sh SEED}
RUNS=${RUNS:-runs/sweeps/split_fmnist_cpu_conditional_labels}
CL=${CL:-cldiff}
PRESET=configs/split_fmnist/cpu_conditional
mkdir -p "$RUNS"
settings() {  # the label-embedding settings of a variant, whatever the preset's own start
  case $1 in
    zeros) echo --set model.label_init_std=0.0 ;;
    init0.1) echo --set model.label_init_std=0.1 ;;
    lr30) echo --set model.label_init_std=0.0 --set model.label_lr_scale=30 ;;
    *) echo "run.sh: unknown variant '$1' (zeros, init0.1 or lr30)" >&2; exit 2 ;;
  esac
}
for v in ${VARIANTS:-zeros init0.1 lr30} ${FULL:-init0.1}; do settings "$v" > /dev/null; done  # names checked first
common=(--no-progress --resume --set seed="$SEED" --set train.threads="${THREADS:-1}" --set train.checkpoint_every=50
        --set eval.guidance=1.0)
for v in ${VARIANTS:-zeros init0.1 lr30}; do
  $CL train --config $PRESET/generative_distillation.yaml --out "$RUNS/gd_${v}_seed$SEED" --tasks 1 \
    $(settings "$v") "${common[@]}" >> "$RUNS/gd_${v}_seed$SEED.log" 2>&1
done
[ "${STEP:-2}" = 1 ] && exit 0
for v in ${FULL:-init0.1}; do
  $CL train --config $PRESET/generative_distillation.yaml --out "$RUNS/gd_${v}_seed$SEED" \
    $(settings "$v") "${common[@]}" >> "$RUNS/gd_${v}_seed$SEED.log" 2>&1
  $CL train --config $PRESET/generative_replay.yaml --out "$RUNS/gr_${v}_seed$SEED" \
    $(settings "$v") --set train.init_from="$RUNS/gd_${v}_seed$SEED" "${common[@]}" >> "$RUNS/gr_${v}_seed$SEED.log" 2>&1
done
