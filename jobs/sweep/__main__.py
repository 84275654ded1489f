"""``python -m jobs.sweep --spec URI``."""

from jobs.core.runtime import exit_now
from jobs.sweep.entrypoint import main

exit_now(main())
