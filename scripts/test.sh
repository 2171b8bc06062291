#!/usr/bin/env bash
# The test command: set up .venv (if needed), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests compute on one thread each (tests/conftest.py), so they run in parallel, one worker per core, at most 4
# (a worker's tests start training processes of their own, each with its memory); a test file's tests stay in one
# worker (--dist loadfile: its module fixtures are made once). CLDIFF_TEST_WORKERS=0 runs them in this process, one
# after another.
cores=$(nproc 2>/dev/null || echo 1)
workers=${CLDIFF_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
case "$workers" in
  ''|*[!0-9]*) echo "CLDIFF_TEST_WORKERS must be a whole number of pytest workers (0: none), got '$workers'" >&2
               exit 2 ;;
esac
if [ "$workers" -lt 2 ]; then workers=0; fi
# --durations: the slowest tests are printed, so that the suite's time budget (about 10 minutes) stays visible
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile --durations=15 "$@"
