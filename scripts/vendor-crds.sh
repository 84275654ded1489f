#!/usr/bin/env bash
# Refreshes tests/fixtures/kubecheck/crds/ from the pinned upstream refs (tests/fixtures/kubecheck/crds/README.md)
# and checks every file against tests/fixtures/kubecheck/crds/SHA256SUMS; nothing changes on a mismatch.
#   scripts/vendor-crds.sh              download from GitHub (needs the network)
#   scripts/vendor-crds.sh --from DIR   copy from DIR (kuberay/…, monitoring/… as here)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=tests/fixtures/kubecheck/crds
kuberay=https://raw.githubusercontent.com/ray-project/kuberay/v1.7.0/helm-chart/kuberay-operator/crds
charts=https://raw.githubusercontent.com/prometheus-community/helm-charts/cf408a290aec489277a94450bb3511432477a53a/charts/kube-prometheus-stack/charts/crds/crds
declare -A sources=(
  [kuberay/ray.io_rayjobs.yaml]=$kuberay/ray.io_rayjobs.yaml
  [kuberay/ray.io_rayclusters.yaml]=$kuberay/ray.io_rayclusters.yaml
  [kuberay/ray.io_raycronjobs.yaml]=$kuberay/ray.io_raycronjobs.yaml
  [monitoring/monitoring.coreos.com_servicemonitors.yaml]=$charts/crd-servicemonitors.yaml
  [monitoring/monitoring.coreos.com_podmonitors.yaml]=$charts/crd-podmonitors.yaml
  [monitoring/monitoring.coreos.com_prometheusrules.yaml]=$charts/crd-prometheusrules.yaml
)
from=""
if [[ ${1:-} == --from ]]; then from=${2:?--from needs a directory}; fi
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
for file in "${!sources[@]}"; do
  mkdir -p "$staging/$(dirname "$file")"
  if [[ -n $from ]]; then
    cp "$from/$file" "$staging/$file"
  else
    curl -fsSL --retry 3 -o "$staging/$file" "${sources[$file]}"
  fi
done
(cd "$staging" && sha256sum --quiet -c "$OLDPWD/$dest/SHA256SUMS")
cp -r "$staging"/kuberay "$staging"/monitoring "$dest"/
echo "vendor-crds: $dest matches SHA256SUMS (${#sources[@]} files)"
