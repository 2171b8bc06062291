#!/usr/bin/env bash
# The main job: set up, then compare generative replay with generative
# distillation on Split Fashion-MNIST at quick CPU scale (3 tasks, one seed),
# and write a report. Re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CL=.venv/bin/cldiff
OUT=${OUT:-runs/split_fmnist_quick}
# CLDIFF_THREADS=1 when something else uses the other core (default: torch's choice)
THREADS=(); [ -n "${CLDIFF_THREADS:-}" ] && THREADS=(--set train.threads="$CLDIFF_THREADS")
$CL evaluator info >/dev/null 2>&1 || $CL evaluator train   # once per machine (cached)
start=$(date +%s)
$CL train --config configs/split_fmnist/quick/generative_distillation.yaml --out "$OUT/gd" --resume "${THREADS[@]}"
# GR reuses GD's task 0: the protocol makes it the same computation (no replay in task 0)
$CL train --config configs/split_fmnist/quick/generative_replay.yaml --out "$OUT/gr" --resume \
  --set train.init_from="$OUT/gd" "${THREADS[@]}"
$CL report "$OUT/gd" "$OUT/gr" --out "$OUT/report"
echo "quick comparison took $(( $(date +%s) - start )) s (after setup and the evaluator)"
echo "report: $OUT/report/report.md"
