"""``python -m jobs.export --spec URI``."""

from jobs.export.main import main

raise SystemExit(main())
