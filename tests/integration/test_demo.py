"""`make demo` (scripts/demo.sh) runs end to end and touches nothing but its own folder: a
TRAINFORGE_HOME the user exported, with a database in it, survives untouched. Run at toy size
(DEMO_SMOKE=1: the same steps, 16 images at 64 px, one epoch) in a folder of the test's own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_never_touches_an_exported_home(tmp_path: Path) -> None:
    home = tmp_path / "my-home"
    home.mkdir()
    (home / "trainforge.db").write_text("a user's job store")
    (home / "dev-token").write_text("a user's token\n")
    before = sorted(p.name for p in home.iterdir())
    demo = tmp_path / "demo"
    env = {**os.environ, "TRAINFORGE_HOME": str(home), "TRAINFORGE_TOKEN": "not-the-demos",
           "TRAINFORGE_URL": "http://127.0.0.1:9", "DEMO_DIR": str(demo), "DEMO_SMOKE": "1"}
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert sorted(p.name for p in home.iterdir()) == before, "the demo wrote into the home"
    assert (home / "trainforge.db").read_text() == "a user's job store"
    assert (home / "dev-token").read_text() == "a user's token\n"
    # It served, trained and reported from its own folder.
    assert (demo / "home" / "dev-token").is_file() and (demo / "home" / "serve.log").is_file()
    assert "SUCCEEDED" in output and "test split" in output, output[-3000:]
    assert f"TRAINFORGE_HOME={demo / 'home'}" in output


def test_the_demo_refuses_to_empty_a_home_directory(tmp_path: Path) -> None:
    """DEMO_DIR is emptied first, so it may not be $HOME (nor / or the checkout)."""
    fake_home = tmp_path / "user"
    fake_home.mkdir()
    (fake_home / "notes.txt").write_text("keep me")
    env = {**os.environ, "HOME": str(fake_home), "DEMO_DIR": str(fake_home)}
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 2 and "refusing DEMO_DIR" in done.stderr, done.stderr
    assert (fake_home / "notes.txt").read_text() == "keep me"
