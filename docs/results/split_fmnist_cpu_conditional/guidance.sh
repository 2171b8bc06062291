#!/usr/bin/env bash
# The conditional runs of run.sh evaluated again at other classifier-free guidance scales (`cldiff evaluate
# --guidance`; the runs' own files stay as they are), then the tables of evaluations.py:
#   bash docs/results/split_fmnist_cpu_conditional/guidance.sh [--dump FILE.json]
# One JSONL per run, task and scale in OUT (default RUNS/evaluate); a file already there is kept, so an
# interrupted call continues. Checkpoints that do not exist yet are skipped. THREADS torch threads (default 1).
# EVALUATE=0: the tables of the files already in OUT, nothing evaluated.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs/sweeps/split_fmnist_cpu_conditional_labels}
OUT=${OUT:-$RUNS/evaluate}
CL=${CL:-cldiff}
mkdir -p "$OUT"
ev() {  # RUN TASK SCALE
  local f="$OUT/$1_task$2_g$3.jsonl"
  [ -s "$f" ] || [ "${EVALUATE:-1}" = 0 ] && return 0
  [ -f "$RUNS/$1/checkpoints/task_0$2.pt" ] || return 0
  OMP_NUM_THREADS=${THREADS:-1} $CL evaluate "$RUNS/$1" --task "$2" --guidance "$3" > "$f.tmp"
  mv "$f.tmp" "$f"
}
for g in 1 1.5 2 3 4; do  # the scale's choice: three checkpoints of two seeds
  ev gd_init0.1_seed69 0 "$g"; ev gd_init0.1_seed69 4 "$g"; ev gd_init0.1_seed1714 0 "$g"
done
ev gd_init0.1_seed42 0 1.5; ev gd_init0.1_seed42 0 1  # seed 42's task 0 (the scale was chosen without it)
for k in 1 2 3 4; do for g in 1 1.5; do  # every task at the scale chosen, and at 1 (the runs' own)
  ev gd_init0.1_seed69 "$k" "$g"; ev gr_init0.1_seed69 "$k" "$g"
  ev gd_init0.1_seed1714 "$k" "$g"; ev gr_init0.1_seed1714 "$k" "$g"; ev gd_init0.1_tg2_seed69 "$k" "$g"
  ev gd_init0.1_seed42 "$k" "$g"; ev gr_init0.1_seed42 "$k" "$g"
done; done
for g in 2 3; do ev gr_init0.1_seed69 4 "$g"; done
labels=()
for f in "$OUT"/*_g1.jsonl "$OUT"/*_g1.5.jsonl "$OUT"/*_g[234].jsonl; do  # the scales in order (the columns)
  [ -f "$f" ] || continue
  b=$(basename "$f" .jsonl); run=${b%_task*}; g=${b##*_g}; seed=${run##*_seed}  # -> "GD, seed 69@guidance 1.5"
  case $run in
    gd_init0.1_tg2_*) name="GD, replay at guidance 2" ;;
    gd_*) name=GD ;;
    gr_*) name=GR ;;
  esac
  labels+=("$name, seed $seed@guidance $g=$f")
done
${PYTHON:-python} docs/results/split_fmnist_cpu_conditional/evaluations.py "${labels[@]}" "$@"
