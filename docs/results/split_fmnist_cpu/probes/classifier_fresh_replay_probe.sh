#!/usr/bin/env bash
# The classifier with fresh replay every iteration (the paper's protocol) instead of the CPU reports' pool of
# 2,000 images per task: does the pool cause the classifier's forgetting? (README, "The classifier").
#   bash docs/results/split_fmnist_cpu/probes/classifier_fresh_replay_probe.sh runs/split_fmnist_cpu/generative_distillation_seed42 2
# Trains the classifier on a copy of the run's first TASKS tasks in $PROBE (default /tmp/fresh_replay_<run name>)
# with docs/results/split_fmnist_cpu/probes/classifier_probe.sh (5 epochs per task as in the reports, one thread): task k replays 128 fresh
# images per iteration from the model of task k-1 (10 DDIM steps each). Slow on a CPU: about 80 min for the 2nd
# task with one thread. Rerun the same command after an interruption to continue.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
RUN=${1:?usage: classifier_fresh_replay_probe.sh RUN_FOLDER TASKS}
TASKS=${2:?usage: classifier_fresh_replay_probe.sh RUN_FOLDER TASKS}
exec bash docs/results/split_fmnist_cpu/probes/classifier_probe.sh "$RUN" "$TASKS" "${PROBE:-/tmp/fresh_replay_$(basename "$RUN")}" \
  --set classifier.replay_pool=null
