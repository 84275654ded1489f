#!/usr/bin/env bash
# `make demo`: a synthetic dataset → the embedded service → a fine-tuning job through the CLI
# (progress bar) → the held-out test scores and where the artifacts are. Everything lives under
# .demo/: the service's home (TRAINFORGE_HOME) and, beside it, the dataset (a job never reads
# trainforge's own home as data); each run starts from a clean one. It ends with the job's
# dashboard URL; DEMO_KEEP_SERVING=1 keeps the demo's server up to open it at once.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=$PWD/.demo
export TRAINFORGE_HOME=${TRAINFORGE_HOME:-$demo/home} YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
tf=.venv/bin/trainforge
rm -rf "$demo" "$TRAINFORGE_HOME"
mkdir -p "$TRAINFORGE_HOME"
data="$demo/datasets/shapes"

echo "== 1/4 synthetic dataset (128 train / 32 val / 32 test images, 3 classes)"
$tf dataset synth "$data" --classes 3 --train 128 --val 32 --test 32 --imgsz 128 --seed 0
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

echo "== 3/4 fine-tuning job (25 epochs at 128 px; a few minutes on a laptop CPU)"
sed "s|@DATASET_URI@|file://$data/|" examples/shapes-demo.yaml >"$TRAINFORGE_HOME/spec.yaml"
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
