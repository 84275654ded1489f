"""The job store shared by the API and the dispatcher: tables, migrations, repository functions.

Public surface:

- :class:`Database` (engine + sessions) and :func:`upgrade` (Alembic migrations to head);
- :mod:`services.store.jobs`: reading jobs (one, a team's pages, events, counts);
- :mod:`services.store.submission`: creating a job (checks in :mod:`~services.store.admission`,
  the spec file, the row through :mod:`~services.store.creation`, the Idempotency-Key record
  of :mod:`~services.store.idempotency`), for the API and the dispatcher's schedules alike;
- :mod:`services.store.events`: a job's state changes, what its run reports, its trials;
- :mod:`services.store.dispatch` and :mod:`services.store.fairness`: what the dispatcher
  claims (fairly across teams), launches and settles;
- :mod:`services.store.schedules` and :mod:`services.store.cron`: schedules, their runs and
  fire times;
- :mod:`services.store.tokens`: API tokens (hashed, team-bound) and per-job tokens;
- :mod:`services.store.domain`: the plain objects those functions return.

SQLAlchemy rows never leave this package: callers get domain objects.
"""

from services.store.db import Database
from services.store.migrate import upgrade

__all__ = ["Database", "upgrade"]
