"""``python -m jobs.export --spec URI``."""

from jobs.core.runtime import exit_now
from jobs.export.entrypoint import main

exit_now(main())
