"""``python -m jobs.train --spec URI``."""

from jobs.train.entrypoint import main

raise SystemExit(main())
