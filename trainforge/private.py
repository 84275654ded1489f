"""Private files: what trainforge keeps under ``$TRAINFORGE_HOME`` is readable by its owner only.

The embedded default keeps the job store (token hashes, job specs and metrics), the secret key,
a bearer token, logs, checkpoints, models and cached datasets under ``$TRAINFORGE_HOME``. The
processes that write there set their umask to :data:`PRIVATE_UMASK` at startup
(:func:`restrict_umask`): ``trainforge serve`` and the CLI commands that open the job store,
``python -m services.api``, ``python -m services.dispatcher`` and the job entrypoints. The umask
is inherited, so the runs LocalBackend starts and the Ray processes a job starts locally
create private files too, whichever library writes them (SQLite, Ultralytics, Ray, tempfile):
files 0600, directories 0700.

A umask only governs what is created from now on; what may exist from before (a home made by
an older version, a database file, its -wal/-shm files) is made private explicitly with
:func:`private_home`, :func:`private_dir`, :func:`private_file` and :func:`private_sqlite`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

#: No permission bits for group or others on anything created.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Files SQLite keeps beside a database file (rollback journal, write-ahead log, shared memory).
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")


def restrict_umask() -> int:
    """Make every file and directory this process (and its children) creates owner-only.

    Keeps any stricter bits the process already had (a umask of 0o277 stays 0o277).

    Returns:
        The previous umask.
    """
    previous = os.umask(PRIVATE_UMASK)
    os.umask(previous | PRIVATE_UMASK)
    return previous


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        # Someone else's file (a shared database, say): nothing we can do but say so.
        log.warning("cannot make %s private (mode %o): %s", path, mode, exc)


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents as 0700 directories; make ``path`` 0700.

    Parents that already exist are left alone: only ``path`` itself is trainforge's.

    Returns:
        ``path``.
    """
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        # The umask can only remove bits from 0o700, never add any.
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    _chmod(path, PRIVATE_DIR_MODE)
    return path


def _shared_directory(path: Path) -> str | None:
    """Why ``path`` is not trainforge's alone to chmod, or None when it is."""
    resolved = path.resolve()
    info = resolved.stat()
    try:
        user_home = Path.home().resolve()
    except (KeyError, RuntimeError):  # no $HOME and no passwd entry
        user_home = None
    if resolved == Path(resolved.anchor):
        return "it is the file system root"
    if resolved == user_home:
        return "it is the user's home directory"
    if info.st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        return "it is a shared directory (sticky or world-writable, like /tmp)"
    if info.st_uid != os.geteuid():
        return "another user owns it"
    return None


def private_home(home: Path) -> bool:
    """Create ``$TRAINFORGE_HOME`` as 0700, or make an existing one 0700.

    Not when the home is a directory trainforge cannot have for itself (the file system root,
    the user's home directory, a shared directory such as /tmp, another user's directory):
    changing its mode would break others, so it is left alone with a warning; what trainforge
    creates in it is still private (the umask, and the database's own mode).

    Returns:
        Whether the home is trainforge's own (and now 0700): only then may the caller make
        existing entries in it private too.
    """
    if home.exists():
        why = _shared_directory(home)
        if why is not None:
            log.warning("TRAINFORGE_HOME %s is not made private because %s; use a directory "
                        "of its own, e.g. ~/.trainforge", home, why)
            return False
    private_dir(home)
    return True


def private_file(path: Path) -> None:
    """Make ``path`` 0600 if it exists (a file an older version may have left readable)."""
    _chmod(path, PRIVATE_FILE_MODE)


def private_sqlite(database: Path) -> None:
    """Create a SQLite database file as 0600 if it is missing, and make it and its
    journal, WAL and shared-memory files 0600.

    SQLite creates the -journal, -wal and -shm files with the database file's own mode, so a
    0600 database keeps them private even in a process that did not call
    :func:`restrict_umask` (a test, a library user).
    """
    if not database.parent.exists():
        private_dir(database.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    private_file(database)
    for suffix in SQLITE_SIDECARS:
        private_file(database.with_name(database.name + suffix))
