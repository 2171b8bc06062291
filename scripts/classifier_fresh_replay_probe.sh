#!/usr/bin/env bash
# The classifier with fresh replay every iteration (the paper's protocol) instead of the CPU reports' pool of
# 2,000 images per task: does the pool cause the classifier's forgetting? (README, "The classifier").
#   bash scripts/classifier_fresh_replay_probe.sh runs/split_fmnist_cpu/generative_distillation_seed42 2
# Copies the run's config, metrics and the end-of-task checkpoints of its first TASKS tasks to
# $PROBE (default /tmp/fresh_replay_<run name>), so that the run's own classifier results stay as they are, and
# trains the classifier there with `cldiff classify` (5 epochs per task as in the reports, one thread): task k
# replays 128 fresh images per iteration from the model of task k-1 (10 DDIM steps each). Slow on a CPU: about
# 80 min for the 2nd task with one thread. Rerun the same command after an interruption to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: classifier_fresh_replay_probe.sh RUN_FOLDER TASKS}
TASKS=${2:?usage: classifier_fresh_replay_probe.sh RUN_FOLDER TASKS}
CL=${CL:-.venv/bin/cldiff}
PROBE=${PROBE:-/tmp/fresh_replay_$(basename "$RUN")}
if [ ! -f "$PROBE/config.yaml" ]; then
  mkdir -p "$PROBE/checkpoints"
  cp "$RUN/config.yaml" "$RUN/metrics.jsonl" "$PROBE/"
  for ((k = 0; k < TASKS; k++)); do
    t=$(printf 'task_%02d' "$k")
    cp "$RUN/checkpoints/$t.json" "$RUN/checkpoints/$t.pt" "$PROBE/checkpoints/"
  done
fi
$CL classify "$PROBE" --set classifier.epochs=5 --set classifier.replay_pool=null --threads 1
echo "results: $PROBE/classifier.jsonl"
