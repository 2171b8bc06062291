#!/usr/bin/env bash
# The lambda sweep of generative distillation at CPU scale, on one seed: bash scripts/repro_cpu_lambda.sh 42 0.5 0.25
# (runs/split_fmnist_cpu/generative_distillation_lam${LAM}_seed$SEED; see scripts/repro_cpu_runs.sh)
set -euo pipefail
SEED=${1:?usage: repro_cpu_lambda.sh SEED LAMBDA...}
shift
for LAM in "$@"; do LAM=$LAM bash "$(dirname "$0")/repro_cpu_runs.sh" "$SEED" generative_distillation; done
