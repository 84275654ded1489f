"""A stand-in job entrypoint that writes the environment it was started with, as JSON, to the
path given as ``--spec`` (test_job_secrets.py launches it through the real LocalBackend)."""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    path = sys.argv[sys.argv.index("--spec") + 1]
    with open(path, "w") as fh:
        json.dump(dict(os.environ), fh)
