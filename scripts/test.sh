#!/usr/bin/env bash
# The test command: set up .venv (if needed), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# --durations: the slowest tests are printed, so that the suite's time budget (about 10 minutes) stays visible
exec .venv/bin/python -m pytest -q --durations=15 "$@"
