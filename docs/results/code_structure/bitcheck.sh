#!/usr/bin/env bash
# bitcheck.sh TREE OUT: a few small real-data runs with the code of TREE (its src/ first on the path)
set -euo pipefail
TREE=$1; OUT=$2; PY=${PY:-$(cd "$(dirname "$0")/../../.." && pwd)/.venv/bin/python}
export PYTHONPATH=$TREE/src OMP_WAIT_POLICY=PASSIVE
S=(--set model.preset=tiny --set train.steps_per_task=10 --set eval.enabled=true --set eval.n_samples=100
   --set eval.steps=4 --set train.threads=1 --set data.max_train_per_task=512 --no-progress)
cd $TREE
$PY -m cldiff train --config configs/split_fmnist/smoke.yaml --out $OUT/gd "${S[@]}" --set classifier.enabled=true \
  --set classifier.epochs=0.2 --set classifier.replay_steps=2 --set classifier.batch_size=32
$PY -m cldiff train --config configs/split_fmnist/smoke.yaml --out $OUT/er "${S[@]}" --set "strategy={name: experience_replay, memory_size: 64}"
$PY -m cldiff train --config configs/split_fmnist/smoke.yaml --out $OUT/gr "${S[@]}" --set "strategy={name: generative_replay}" --set train.micro_batches=2
$PY -m cldiff train --config configs/split_fmnist/smoke.yaml --out $OUT/gr_shared "${S[@]}" --set "strategy={name: generative_replay}" --set train.init_from=$OUT/er
