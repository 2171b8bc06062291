#!/usr/bin/env bash
# The budget probe: bash scripts/repro_cpu_budget.sh 42 600 generative_distillation generative_replay joint
# (runs/split_fmnist_cpu/NAME_steps${STEPS}_seed$SEED; see scripts/repro_cpu_runs.sh)
set -euo pipefail
SEED=${1:?usage: repro_cpu_budget.sh SEED STEPS NAME...}
STEPS=${2:?usage: repro_cpu_budget.sh SEED STEPS NAME...}
shift 2
STEPS=$STEPS exec bash "$(dirname "$0")/repro_cpu_runs.sh" "$SEED" "$@"
