"""``python -m jobs.train --spec URI``."""

from jobs.core.runtime import exit_now
from jobs.train.entrypoint import main

exit_now(main())
