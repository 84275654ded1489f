"""One job's corner of the artifacts store, addressed by trainforge.layout keys.

Holds URIs only (no client), so it pickles into Ray workers; each process opens its own
cached client on first use.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge import layout
from trainforge.errors import ObjectNotFound, RetriesExhausted
from trainforge.storage import ObjectStore, join_key, open_location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobArtifacts:
    """``<artifacts_uri>/jobs/<job_id>/…`` for one job."""

    artifacts_uri: str
    job_id: str

    def _location(self) -> tuple[ObjectStore, str]:
        return open_location(self.artifacts_uri.rstrip("/") + "/")

    @property
    def store(self) -> ObjectStore:
        return self._location()[0]

    def key(self, relative: str) -> str:
        """Store key of a layout key (``jobs/<id>/…``) under the artifacts prefix."""
        return join_key(self._location()[1], relative)

    def uri(self, relative: str) -> str:
        return self.store.uri(self.key(relative))

    def upload(self, path: Path, relative: str) -> None:
        self.store.upload(path, self.key(relative))

    def put_json(self, relative: str, data: Any) -> None:
        body = json.dumps(data, indent=2, sort_keys=True).encode()
        self.store.put(self.key(relative), body, content_type="application/json")

    def download(self, relative: str, dest: Path) -> bool:
        """Copy an object to ``dest``; False if there is none."""
        try:
            self.store.download(self.key(relative), dest)
        except ObjectNotFound:
            return False
        return True

    def claim_run(self, max_runs: int) -> int:
        """Count one more training run of this job; returns its number (1-based).

        Each run creates its own marker with a conditional create, so two runs never share a
        number and the count survives restarts of every process.

        Raises:
            RetriesExhausted: ``max_runs`` runs have started already.
        """
        store = self.store
        for run in range(1, max_runs + 1):
            if store.put_if_absent(self.key(layout.run_marker_key(self.job_id, run)),
                                   b"", content_type="text/plain"):
                return run
        raise RetriesExhausted(
            f"job {self.job_id} has started {max_runs} training run(s), all its spec allows "
            f"(retries + 1, counting Ray Train's worker restarts and the job's attempts); "
            "submit it again to train again")

    def runs_used(self) -> int:
        """Training runs of this job so far (see :meth:`claim_run`)."""
        prefix = self.key(layout.run_marker_key(self.job_id, 0)).rsplit("/", 1)[0] + "/"
        return sum(1 for _ in self.store.list(prefix))

    # Keys of this job (trainforge.layout is the one source of the layout).
    def checkpoint(self, name: str = "last.pt") -> str:
        return layout.checkpoint_key(self.job_id, name)

    def train_output(self, name: str) -> str:
        return join_key(layout.train_output_prefix(self.job_id), name)

    def log(self, attempt: int) -> str:
        return layout.attempt_log_key(self.job_id, attempt)

    def dataset_report(self) -> str:
        return layout.dataset_report_key(self.job_id)
