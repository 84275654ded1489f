#!/usr/bin/env bash
# GPU check of the export job: TensorRT FP16 and INT8 engines, gated against best.pt on the GPU.
#
# Runs on one machine with an NVIDIA GPU (H100/H200 class, 16 cores) and no internet, in under
# 8 minutes: installs what it needs into .gpu-venv (reusing whatever the image already has),
# makes a synthetic shapes set, trains yolov8n from scratch for 2 epochs on the GPU, then runs
# the real export entrypoint (python -m jobs.export) for ONNX + TensorRT FP16 + TensorRT INT8
# (calibrated on train images), which evaluates every format against best.pt like for like
# (mAP50-95 on the test split) and times them (p50/p95 of 50 warm runs at batch 1), publishes
# what passes, and finally runs the @pytest.mark.gpu test. Prints a table of the results.
#
# Offline installs: pip installs from wheels carried in .whl/ (git-ignored). Fill it on a
# connected machine with the GPU box's Python version and platform, e.g. for Python 3.11:
#   pip download -d .whl --only-binary=:all: --python-version 3.11 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       torch==2.14.1 torchvision==0.29.1 'ultralytics>=8.3' onnx onnxslim onnxruntime \
#       'tensorrt-cu13>=10.13,<11' pydantic pydantic-settings pyyaml boto3 typer httpx pillow \
#       numpy prometheus-client pytest
# (tensorrt-cu13 matches torch 2.14.1's CUDA 13 build. TensorRT 11 dropped the FP16/INT8 builder
# flags, and Ultralytics then needs nvidia-modelopt to build reduced-precision engines: pin <11
# or carry nvidia-modelopt too. Add onnxruntime-gpu to evaluate ONNX on the GPU as well;
# without it ONNX is evaluated and timed on the CPU, against PyTorch on the CPU.)
# Without .whl/, pip uses its configured index. Packages already importable are not installed.
#
# Usage (repository root): bash scripts/gpu-check.sh
# Environment: IMGSZ (default 320), TRAIN_IMAGES (2000), KEEP=1 keeps the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n== [%3ds] %s\n' "$((SECONDS - started))" "$*"; }

export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
IMGSZ=${IMGSZ:-320}
TRAIN_IMAGES=${TRAIN_IMAGES:-2000}

step "GPU"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; then
  echo "gpu-check: no NVIDIA GPU (nvidia-smi failed); nothing to check here" >&2
  exit 2
fi

step "Python environment (.gpu-venv)"
PY=${PYTHON:-python3}
[[ -x .gpu-venv/bin/python ]] || "$PY" -m venv --system-site-packages .gpu-venv
VPY=.gpu-venv/bin/python
pip_install() {
  if [[ -d .whl ]]; then
    "$VPY" -m pip install -q --no-index --find-links .whl "$@"
  else
    "$VPY" -m pip install -q "$@"
  fi
}
missing=()
for spec in torch:torch==2.14.1 torchvision:torchvision==0.29.1 ultralytics:ultralytics \
            onnx:onnx onnxslim:onnxslim onnxruntime:onnxruntime 'tensorrt:tensorrt-cu13>=10.13,<11' \
            pydantic:pydantic pydantic_settings:pydantic-settings yaml:pyyaml boto3:boto3 \
            typer:typer httpx:httpx PIL:pillow numpy:numpy prometheus_client:prometheus-client \
            pytest:pytest; do
  "$VPY" -c "import ${spec%%:*}" 2>/dev/null || missing+=("${spec#*:}")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  pip_install "${missing[@]}"
fi
"$VPY" - <<'EOF'
import importlib.util, torch, ultralytics, onnxruntime
trt = importlib.util.find_spec("tensorrt")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), ultralytics {ultralytics.__version__}, "
      f"onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}, "
      f"tensorrt {'present' if trt else 'MISSING'}")
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("GPU:", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
EOF

WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$WORK"' EXIT
echo "work folder: $WORK"

step "synthetic dataset ($TRAIN_IMAGES train images at ${IMGSZ}px)"
"$VPY" - "$WORK" "$IMGSZ" "$TRAIN_IMAGES" <<'EOF'
import sys
from pathlib import Path
from trainforge.datasets import synth, write_local_data_yaml
work, imgsz, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
root = synth(work / "shapes", classes=3, train=n, val=200, test=200, imgsz=imgsz, seed=7)
write_local_data_yaml(root, work / "data.yaml")
print("dataset:", root)
EOF

step "train yolov8n from scratch, 2 epochs on the GPU"
"$VPY" - "$WORK" "$IMGSZ" <<'EOF'
import shutil, sys, time
from pathlib import Path
from ultralytics.models.yolo.model import YOLO
work, imgsz = Path(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
# amp=False: Ultralytics' AMP self-check downloads weights, and there is no network here.
YOLO("yolov8n.yaml").train(data=str(work / "data.yaml"), epochs=2, imgsz=imgsz, batch=32,
                           device=0, workers=8, cache="ram", amp=False, plots=False, val=False,
                           mosaic=0.0, optimizer="AdamW", lr0=0.005, warmup_epochs=0.2,
                           project=str(work / "runs"), name="train", exist_ok=True,
                           verbose=False)
shutil.copyfile(work / "runs/train/weights/last.pt", work / "best.pt")
print(f"trained in {time.perf_counter() - t:.0f}s")
EOF

step "python -m jobs.export (ONNX, TensorRT FP16, TensorRT INT8; gates; publish)"
cat > "$WORK/spec.yaml" <<EOF
kind: export
name: gpu-check
dataset: {uri: "file://$WORK/shapes"}
model: {base: "file://$WORK/best.pt"}
export: {formats: [onnx, engine], half: true, int8: true}
EOF
set +e
# Run by hand (no TRAINFORGE_JOB_ID): team dev with the operator's rights, a local-… version.
TRAINFORGE_HOME="$WORK/home" \
  TRAINFORGE_MODELS_URI="file://$WORK/models" TRAINFORGE_ARTIFACTS_URI="file://$WORK/artifacts" \
  "$VPY" -m jobs.export --spec "file://$WORK/spec.yaml"
export_rc=$?
set -e
echo "jobs.export exit status: $export_rc"

step "results"
"$VPY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
(version,) = (work / "models/dev/gpu-check").iterdir()
manifest = json.loads((version / "manifest.json").read_text())
report = json.loads((version / "report.json").read_text())["export"]
env = report["environment"]
print(f"GPU {env['gpu']}, TensorRT {env['tensorrt']}, torch {env['torch']}, "
      f"onnxruntime {env['onnxruntime']}, imgsz {report['imgsz']}, eval on "
      f"{report['evaluation']['split']} split")
ms = lambda v: f"{v * 1e3:8.2f}" if v is not None else "       -"
print(f"{'format':13} {'status':8} {'device':7} {'mAP50-95':>9} {'best.pt':>9} {'delta':>8} "
      f"{'gate':>6} {'p50 ms':>8} {'p95 ms':>8} {'pt p50':>8} {'pt p95':>8}  artifact")
for key, r in report["formats"].items():
    lat, ref = r.get("latency") or {}, r.get("reference_latency") or {}
    num = lambda v: f"{v:9.4f}" if v is not None else "        -"
    delta = f"{r['map_delta']:+8.4f}" if r.get("map_delta") is not None else "       -"
    print(f"{key:13} {r['status']:8} {str(r.get('device')):7} {num(r.get('map50_95'))} "
          f"{num(r.get('reference_map50_95'))} {delta} {r['threshold']:6.3f} "
          f"{ms(lat.get('p50'))} {ms(lat.get('p95'))} {ms(ref.get('p50'))} {ms(ref.get('p95'))}"
          f"  {r.get('artifact') or ''}  {r.get('reason') or ''}")
print("published:", ", ".join(a["name"] for a in manifest["artifacts"]))
EOF
"$VPY" -m trainforge models verify "gpu-check@latest" --store "file://$WORK/models"

step "pytest -m gpu tests/export/test_gpu.py"
"$VPY" -m pytest -q -m gpu tests/export/test_gpu.py -p no:cacheprovider -s

step "done"
exit "$export_rc"
