#!/usr/bin/env bash
# Two training runs on one machine: seconds per step of a `quick`-preset task 0 (small UNet, batch 64, bf16),
# one run alone and two side by side, with torch's default threads, with one thread each, and with
# OMP_WAIT_POLICY=PASSIVE. Nothing else may run meanwhile. Prints one line per case.
#   bash docs/results/two_runs/run.sh [STEPS]        # default 40 steps per run
set -uo pipefail
cd "$(dirname "$0")/../../.."
STEPS=${1:-40}
CL=${CL:-.venv/bin/cldiff}
T=$(mktemp -d)
export CLDIFF_BUSY_CHECK=0  # the runs start together; the warning is not what is measured
one() {  # one OUT [--set ...]: task 0 only, no evaluation, no grid
  local out=$1
  shift
  $CL train --config configs/split_fmnist/quick/generative_distillation.yaml --out "$out" --no-progress --tasks 1 \
    --set train.batch_size=64 --set train.first_task_steps="$STEPS" --set eval.enabled=false --set train.grid_samples=0 \
    --set train.log_every="$STEPS" "$@" > /dev/null 2>&1
}
speed() {  # seconds per step of a finished run
  python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"task_end\"' in l][0]; print(f\"{r['train_s']/r['steps']:.3f}\")" "$1/metrics.jsonl"
}
case_() {  # case_ NAME ENV ARGS: two runs side by side (or one with NAME alone_*)
  local name=$1 envs=$2
  shift 2
  rm -rf "$T"/*
  if [[ $name == alone* ]]; then
    env $envs bash -c "$(declare -f one); CL='$CL' STEPS=$STEPS one $T/a $*"
    echo "$name: $(speed $T/a) s/step"
  else
    env $envs bash -c "$(declare -f one); CL='$CL' STEPS=$STEPS one $T/a $*" &
    env $envs bash -c "$(declare -f one); CL='$CL' STEPS=$STEPS one $T/b $*" &
    wait
    echo "$name: $(speed $T/a) and $(speed $T/b) s/step"
  fi
}
echo "cpu: $(lscpu | grep -m1 'Model name' | sed 's/.*: *//'), $(nproc) cores, amx: $(lscpu | grep -c amx_bf16)"
case_ alone_default_threads ""
case_ alone_one_thread "" --set train.threads=1
case_ alone_default_threads_passive "OMP_WAIT_POLICY=PASSIVE"
case_ two_default_threads ""
case_ two_one_thread_each "" --set train.threads=1
case_ two_default_threads_passive "OMP_WAIT_POLICY=PASSIVE"
rm -rf "$T"
