#!/usr/bin/env bash
# The test command: set up .venv (if needed), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests compute on one thread each (tests/conftest.py), so they run in parallel, one worker per core, at most 4
# (each worker holds about 1 GiB); a test file's tests stay in one worker (--dist loadfile: its module fixtures are
# made once). CLDIFF_TEST_WORKERS=0 runs them in this process, one after another.
cores=$(nproc 2>/dev/null || echo 1)
workers=${CLDIFF_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
if [ "$workers" -lt 2 ]; then workers=0; fi
# --durations: the slowest tests are printed, so that the suite's time budget (about 10 minutes) stays visible
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile --durations=15 "$@"
