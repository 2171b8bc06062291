#!/usr/bin/env bash
# Generative distillation's lambda at the `cpu` presets' scale, seed 42 (configs/sweeps/split_fmnist_cpu_lambda.yaml):
# two runs at a time with one thread each; the first trains task 0, the others start from it. Every run resumes
# where it stopped, so the command can be started again after an interruption; at the end it writes the sweep's
# report (runs/sweeps/split_fmnist_cpu_lambda/report/) and table.py prints the table and the rule's choice.
#   bash docs/results/split_fmnist_cpu_lambda/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
CL=${CL:-cldiff}
$CL sweep --no-progress --jobs 2 configs/sweeps/split_fmnist_cpu_lambda.yaml
python docs/results/split_fmnist_cpu_lambda/table.py
