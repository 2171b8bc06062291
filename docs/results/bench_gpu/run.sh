#!/usr/bin/env bash
# `cldiff bench` on one GPU: the paper preset at the paper's batch (every strategy, the plain fp32 reference, the
# speed options one at a time with torch.compile and CUDA graphs, the paper protocol's time at these speeds),
# a profile of one GD iteration, and the small UNet at the `cpu` presets' scale.
#   bash docs/results/bench_gpu/run.sh 2>&1 | tee log.txt     # JSON results in $OUT (default runs/bench_gpu)
# CL: how to call cldiff (default cldiff); PY: the python that has cldiff (default python3).
# DEVICE and PRESET (default cuda, paper) only to try the script elsewhere (DEVICE=cpu PRESET=tiny).
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs/bench_gpu}
CL=${CL:-cldiff}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-paper}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv > "$OUT/nvidia_smi.csv" 2>&1
echo "== 1. $PRESET UNet, batch 128: naive, GR, GD, the plain reference, DDIM generation ($(date +%T))"
$CL bench --device "$DEVICE" --preset "$PRESET" --batch 128 --iters 20 --warmup 3 \
  --strategies naive,generative_replay,generative_distillation --out "$OUT/paper_bs128.json"
echo "== 2. where a default GD iteration's time goes ($(date +%T))"
$PY docs/results/bench/profile_step.py --device "$DEVICE" --preset "$PRESET" --batch 128 --iters 3 --rows 25 \
  --out "$OUT/profile_paper_bs128.txt" | head -1
echo "== 3. the small UNet as the cpu presets train it: 28x28, batch 64 ($(date +%T))"
$CL bench --device "$DEVICE" --preset small --image-size 28 --batch 64 --iters 20 --warmup 3 --no-reference \
  --out "$OUT/small_28px_bs64.json"
echo "== 4. the speed options one at a time, torch.compile and CUDA graphs included ($(date +%T))"
$CL bench --device "$DEVICE" --preset "$PRESET" --batch 128 --iters 10 --warmup 3 --strategies generative_distillation \
  --no-reference --ablation --compile --out "$OUT/paper_bs128_ablation.json"
echo "== done ($(date +%T))"
