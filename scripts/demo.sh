#!/usr/bin/env bash
# `make demo`: a synthetic dataset → the embedded service → a fine-tuning job through the CLI
# (progress bar) → the held-out test scores and where the artifacts are. Everything lives under
# .demo/ (DEMO_DIR): the service's home and, beside it, the dataset (a job never reads
# trainforge's own home as data); each run starts from a clean one. The demo never reads or
# touches a TRAINFORGE_HOME of yours: it always serves its own. It ends with the job's
# dashboard URL; DEMO_KEEP_SERVING=1 keeps the demo's server up to open it at once.
# DEMO_SMOKE=1 runs the same steps at toy size (tests/integration/test_demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
demo=$(realpath -m "${DEMO_DIR:-$PWD/.demo}")
case "$demo" in
  / | "$HOME" | "$PWD") echo "demo: refusing DEMO_DIR=$demo (it is emptied first)" >&2; exit 2 ;;
esac
export TRAINFORGE_HOME=$demo/home YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
unset TRAINFORGE_URL TRAINFORGE_TOKEN
tf=.venv/bin/trainforge
rm -rf "$demo"
mkdir -p "$TRAINFORGE_HOME"
data="$demo/datasets/shapes"
if [[ ${DEMO_SMOKE:-0} == 1 ]]; then
  sizes=(--train 16 --val 4 --test 4 --imgsz 64) overrides='{"epochs": 1, "imgsz": 64}'
else
  sizes=(--train 128 --val 32 --test 32 --imgsz 128) overrides='{}'
fi

echo "== 1/4 synthetic dataset (${sizes[*]}, 3 classes)"
$tf dataset synth "$data" --classes 3 "${sizes[@]}" --seed 0
$tf dataset validate "$data" | tail -n 3

echo "== 2/4 the embedded service (SQLite, local object store, local backend)"
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$tf serve --port "$port" >"$TRAINFORGE_HOME/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
export TRAINFORGE_URL="http://127.0.0.1:$port"
for _ in $(seq 120); do
  .venv/bin/python -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)' \
    "$TRAINFORGE_URL/readyz" 2>/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$TRAINFORGE_HOME/serve.log"; exit 1; }
  sleep 0.5
done
echo "serving on $TRAINFORGE_URL (log: $TRAINFORGE_HOME/serve.log)"

echo "== 3/4 fine-tuning job (examples/shapes-demo.yaml; a few minutes on a laptop CPU)"
# The example spec with this dataset's URI (and the toy sizes in smoke mode).
.venv/bin/python - examples/shapes-demo.yaml "file://$data/" "$overrides" \
  >"$TRAINFORGE_HOME/spec.yaml" <<'PY'
import json, sys

import yaml

spec = yaml.safe_load(open(sys.argv[1]))
spec["dataset"]["uri"] = sys.argv[2]
spec["train"].update(json.loads(sys.argv[3]))
print(yaml.safe_dump(spec, sort_keys=False), end="")
PY
out=$($tf jobs submit "$TRAINFORGE_HOME/spec.yaml" --wait | tee /dev/stderr)
job=$(awk '/^submitted /{print $2; exit}' <<<"$out")

echo "== 4/4 results on the held-out test split"
$tf models report "shapes-demo@$job"

token_file="$TRAINFORGE_HOME/dev-token"
if [[ ${DEMO_KEEP_SERVING:-0} == 1 ]]; then
  echo "== the dashboard (DEMO_KEEP_SERVING=1: this server stays up until Ctrl-C)"
  echo "open $TRAINFORGE_URL/ui/jobs/$job and sign in with the token in $token_file"
  wait $server
  exit 0
fi
echo "== the dashboard: this demo's server stops now; serve the same home again and open the job"
echo "  TRAINFORGE_HOME=$TRAINFORGE_HOME $tf serve --port 8000"
echo "  http://127.0.0.1:8000/ui/jobs/$job   (sign in with the token in $token_file)"
