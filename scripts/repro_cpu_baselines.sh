#!/usr/bin/env bash
# The other baselines, one seed: bash scripts/repro_cpu_baselines.sh 42 lwf_distillation gaussian_distillation
# (runs/split_fmnist_cpu/NAME_seed$SEED; see scripts/repro_cpu_runs.sh)
set -euo pipefail
exec bash "$(dirname "$0")/repro_cpu_runs.sh" "$@"
