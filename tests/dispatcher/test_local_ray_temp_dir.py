"""The embedded server's Ray head keeps its unix sockets where their paths fit in 107 bytes,
however long ``$TRAINFORGE_HOME`` is (services/dispatcher/local_ray.py). Nothing is started:
only the directory the head would be given is checked."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from services.dispatcher.local_ray import LocalRayHead

#: The longest socket Ray makes under its temp dir, with a 7-digit pid (Linux's largest).
LONGEST_SOCKET = "/session_2026-12-07_16-49-34_869536_4194304/sockets/plasma_store"


def _temp_dir(home: Path) -> Path:
    return LocalRayHead(home, num_cpus=1)._temp_dir()


def test_a_long_home_gets_a_short_temp_dir_linked_from_it(tmp_path: Path) -> None:
    home = tmp_path / ("h" * 60)
    temp = _temp_dir(home)
    try:
        assert len(str(temp) + LONGEST_SOCKET) <= 107, temp
        assert (home / "ray").is_symlink() and (home / "ray").resolve() == temp.resolve()
        # A restarted server replaces the previous short directory instead of piling them up.
        again = _temp_dir(home)
        assert again != temp and not temp.exists()
        shutil.rmtree(again)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_a_home_whose_sockets_fit_keeps_its_ray_dir_inside() -> None:
    home = Path(tempfile.mkdtemp(prefix="tf-", dir="/tmp"))  # short enough for every socket
    try:
        temp = _temp_dir(home)
        assert temp == home / "ray" and temp.is_dir() and not temp.is_symlink()
        assert len(str(temp) + LONGEST_SOCKET) <= 107
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_pytest_home_that_once_overflowed_is_moved_out() -> None:
    # 48 characters: Ray's plasma socket under it took 110 bytes and the head never started.
    home = Path("/tmp/pytest-of-root/pytest-1/popen-gw0/home0")
    assert len(str(home / "ray")) == 48
    assert len(str(home / "ray") + LONGEST_SOCKET) > 107
    from services.dispatcher import local_ray

    assert len(str(home / "ray")) > local_ray._MAX_TEMP_DIR
