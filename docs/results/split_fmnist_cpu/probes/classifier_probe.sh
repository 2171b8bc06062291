#!/usr/bin/env bash
# The classifier (docs/protocol.md §5) on a finished run with other classifier settings, without touching the
# run's own classifier results (README, "The classifier"):
#   bash docs/results/split_fmnist_cpu/probes/classifier_probe.sh RUN_FOLDER TASKS PROBE_FOLDER [--set classifier.KEY=VALUE ...]
#   bash docs/results/split_fmnist_cpu/probes/classifier_probe.sh runs/split_fmnist_cpu/generative_distillation_seed42 5 \
#     runs/split_fmnist_cpu/probes/kd_paper_gd_seed42 --set classifier.kd_direction=paper
# Copies the run's config, metrics and the end-of-task checkpoints of its first TASKS tasks to PROBE_FOLDER and
# trains the classifier there with `cldiff classify` (the reports' settings, 5 epochs per task and a replay pool of
# 2,000 images, one thread; the --set options come after them and override them). Results:
# PROBE_FOLDER/classifier.jsonl. Rerun the same command after an interruption to continue with the next task.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
usage="usage: classifier_probe.sh RUN_FOLDER TASKS PROBE_FOLDER [--set classifier.KEY=VALUE ...]"
RUN=${1:?$usage}
TASKS=${2:?$usage}
PROBE=${3:?$usage}
shift 3
CL=${CL:-.venv/bin/cldiff}
if [ ! -f "$PROBE/config.yaml" ]; then
  for ((k = 0; k < TASKS; k++)); do
    t=$(printf 'task_%02d' "$k")
    if [ ! -f "$RUN/checkpoints/$t.pt" ]; then
      echo "$RUN has no end-of-task checkpoint $t.pt: finish the run's first $TASKS tasks first" >&2
      exit 2
    fi
  done
  mkdir -p "$PROBE/checkpoints"
  for ((k = 0; k < TASKS; k++)); do
    t=$(printf 'task_%02d' "$k")
    cp "$RUN/checkpoints/$t.json" "$RUN/checkpoints/$t.pt" "$PROBE/checkpoints/"
  done
  cp "$RUN/metrics.jsonl" "$PROBE/"
  cp "$RUN/config.yaml" "$PROBE/"  # last: its presence marks a complete copy
fi
$CL classify "$PROBE" --set classifier.epochs=5 --set classifier.replay_pool=2000 --threads 1 "$@"
echo "results: $PROBE/classifier.jsonl"
