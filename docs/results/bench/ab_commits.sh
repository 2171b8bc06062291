#!/usr/bin/env bash
# The small UNet's 28x28 training at two commits of cldiff, whole processes in alternation (ROUNDS rounds), so that
# both see the same moments of a machine whose speed drifts:
#   bash docs/results/bench/ab_commits.sh OLD_COMMIT [ROUNDS]        # from the repository root, after scripts/setup.sh
# Prints one line per process: round, commit, then naive's and GD's s/iter and images/s.
set -euo pipefail
old=${1:?give the earlier commit to compare with HEAD}
rounds=${2:-3}
tree=$(mktemp -d)
git worktree add -q "$tree" "$old"
trap 'git worktree remove --force "$tree"' EXIT
for r in $(seq "$rounds"); do
  for v in "$old" HEAD; do
    src=$PWD/src; [ "$v" = HEAD ] || src=$tree/src
    out=$(env PYTHONPATH="$src" .venv/bin/python -m cldiff bench --preset small --image-size 28 --batch 64 --iters 4 \
      --warmup 1 --threads 2 --strategies naive,generative_distillation --no-reference --out "$tree/bench.json")
    echo "$r $v $(grep -E '^(naive|generative_distillation) ' <<<"$out" | awk '{print $1, $2, $3}' | tr '\n' ' ')"
  done
done
