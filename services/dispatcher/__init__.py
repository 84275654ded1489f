"""Claims queued jobs and runs them on a backend (local, Ray Jobs API, KubeRay)."""
