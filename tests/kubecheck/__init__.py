"""Offline checks for Kubernetes objects: CRD schemas (strict), KubeRay's controller rules,
the core API schemas of Kubernetes 1.30+, and Pod Security "restricted".

No API server can run here, so these re-implement what one (plus the KubeRay operator and the
Pod Security admission controller) would refuse. Shared by tests/chart and tests/k8s.
"""
