"""The job store shared by the API and the dispatcher: tables, migrations, repository functions.

Public surface:

- :class:`Database` (engine + sessions) and :func:`upgrade` (Alembic migrations to head);
- :mod:`services.store.jobs`: the job repository (submit, list, transition, claim, events);
- :mod:`services.store.submission`: creating a job (limits, spec file, row), for the API and
  the dispatcher's schedules alike;
- :mod:`services.store.schedules` and :mod:`services.store.cron`: schedules, their runs and
  fire times;
- :mod:`services.store.tokens`: API tokens (hashed, team-bound) and per-job tokens;
- :mod:`services.store.domain`: the plain objects those functions return.

SQLAlchemy rows never leave this package: callers get domain objects.
"""

from services.store.db import Database
from services.store.migrate import upgrade

__all__ = ["Database", "upgrade"]
