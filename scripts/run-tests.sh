#!/usr/bin/env bash
# Runs pytest; "no tests collected" (exit 5) is a failure here, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
.venv/bin/python -m pytest "$@"
rc=$?
if [[ $rc -eq 5 ]]; then echo "run-tests: pytest collected no tests" >&2; exit 1; fi
exit $rc
