"""What a job started on this machine inherits from the dispatcher's environment.

Shared by the local backend's runs and the warm Ray head that ``trainforge serve`` keeps for
them (services/dispatcher/local_ray.py), so that both pass on the same variables.
"""

from __future__ import annotations

from collections.abc import Mapping

#: What a job inherits from the dispatcher's environment, by name or prefix: the toolchain,
#: locale and proxies, object-store credentials (the same user's; a Kubernetes job gets its
#: own instead), and the runtime knobs of CUDA, PyTorch, Ray and Ultralytics. Nothing else:
#: not the secret key, the database URL, API tokens or the storage policy of other teams.
_INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "COVERAGE_PROCESS_START",
    "TRAINFORGE_HOME", "TRAINFORGE_DATASET_CACHE", "TRAINFORGE_WEIGHTS_CACHE",
    "TRAINFORGE_PUSHGATEWAY_URL",
})
_INHERITED_PREFIXES = ("LC_", "AWS_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_",
                       "TORCH_", "PYTORCH_", "RAY_", "YOLO_")


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the dispatcher's environment a local job may see (see ``_INHERITED``)."""
    return {k: v for k, v in environ.items()
            if (k in _INHERITED or k.startswith(_INHERITED_PREFIXES))
            and k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}  # jobs load weights the safe way only
