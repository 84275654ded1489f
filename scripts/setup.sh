#!/usr/bin/env bash
# Everything a fresh Debian machine needs for `make demo` and `make test`. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_debs=()
command -v promtool >/dev/null || need_debs+=(prometheus)
command -v prometheus-pushgateway >/dev/null || [[ -x /usr/bin/prometheus-pushgateway ]] \
  || need_debs+=(prometheus-pushgateway)
# The dashboard's browser tests (tests/ui/test_browser.py) drive Debian's chromium through
# Playwright; `playwright install` is never run (it downloads a browser build).
[[ -x /usr/bin/chromium ]] || need_debs+=(chromium fonts-dejavu-core)
# docs/api.md's examples use curl and jq, and tests/api/test_docs_examples.py runs them as
# written.
command -v curl >/dev/null || need_debs+=(curl)
command -v jq >/dev/null || need_debs+=(jq)
if ((${#need_debs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${need_debs[*]}"
    apt-get update -qq
    # policy-rc.d keeps the packaged daemons from starting: tests start their own.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
      "${need_debs[@]}" >/dev/null
  else
    echo "setup: please install Debian packages: ${need_debs[*]} (need root)" >&2
  fi
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: the CUDA build of 2.14.1 runs on CPUs too and is what the train
# image ships; asking for it explicitly stops a resolver from picking another build.
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e '.[api,train,dev]'
bash scripts/install-helm.sh .venv/bin
echo "setup: done (.venv ready)"
