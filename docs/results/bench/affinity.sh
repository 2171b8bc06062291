#!/usr/bin/env bash
# OpenMP thread binding (torch's CPU wheels use GNU OpenMP, libgomp): the small UNet's training step with torch's
# default threads against OMP_PROC_BIND=close OMP_PLACES=cores, in alternating processes (the setting is read when
# a process starts, so it cannot alternate inside one), ROUNDS rounds of each. Run from the repository root, nothing
# else running:
#   bash docs/results/bench/affinity.sh > docs/results/bench/small28_amx_affinity.txt
# (ROUNDS=N: rounds per strategy; STRATEGIES="a b": the strategies, default naive and generative_distillation)
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PY=${PY:-.venv/bin/python}
lscpu | grep -o amx_bf16 | head -1 || echo "no amx_bf16"
for strategy in ${STRATEGIES:-naive generative_distillation}; do
  for r in $(seq "$ROUNDS"); do
    for bind in default close; do
      if [ "$bind" = close ]; then env_bind=(OMP_PROC_BIND=close OMP_PLACES=cores); else env_bind=(); fi
      line=$(env "${env_bind[@]}" PYTHONPATH=src "$PY" docs/results/bench/interleaved.py --preset small \
        --image-size 28 --batch 64 --strategy "$strategy" --threads 2 --rounds 1 --iters 4 --variants defaults \
        | grep "^defaults .*mean")
      echo "$strategy round $r bind=$bind: $line"
    done
  done
done
