"""``python -m jobs.sweep --spec URI``."""

from jobs.sweep.entrypoint import main

raise SystemExit(main())
