#!/usr/bin/env bash
# Runs pytest on PYTEST_WORKERS parallel workers (default: one per CPU; 0 runs in this process);
# "no tests collected" (exit 5) is a failure here, not a pass. Tiers and budget:
# docs/development.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
workers=${PYTEST_WORKERS:-auto}
parallel=()
if [[ $workers != 0 ]]; then
  # loadgroup: tests that share a module-scoped fixture stay on one worker (tests/conftest.py).
  parallel=(-n "$workers" --dist loadgroup)
fi
# Byte-compile the project once: the suite starts hundreds of Python processes (jobs, Ray
# workers, CLIs, servers), and where PYTHONDONTWRITEBYTECODE is set none of them would keep
# what it compiled, so each would compile every module it imports again.
.venv/bin/python -m compileall -q -j 0 trainforge services jobs tests bench scripts >/dev/null
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [[ $rc -eq 5 ]]; then echo "run-tests: pytest collected no tests" >&2; exit 1; fi
exit $rc
