"""Studies that take minutes to build, built once per test run and shared by every xdist worker.

Session fixtures and functools.cache live in one worker process; these studies live in a
directory of the whole run (named by xdist's run id) and are built under a file lock by
whichever worker needs one first, while any other worker needing it waits for the result.
A failed build leaves no `done` marker, so the next test that needs it tries again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

RUN_ENV = "SSLTRACE_TEST_RUN"  # set by the controlling pytest process, inherited by workers


def start_run() -> None:
    """Name this run's shared directory (the controlling process, before workers start)."""
    os.environ.setdefault(RUN_ENV, uuid.uuid4().hex[:12])


def run_dir() -> Path:
    """The directory of this test run's shared studies (created on first use)."""
    path = Path(tempfile.gettempdir()) / f"ssltrace_tests_{os.environ[RUN_ENV]}"
    path.mkdir(exist_ok=True)
    return path


def build_once(name: str, build: Callable[[Path], None]) -> Path:
    """`run_dir()/name`, built by `build(path)` unless a worker has built it already."""
    folder = run_dir() / name
    done = run_dir() / f"{name}.done"
    with open(run_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def remove_run_dir() -> None:
    shutil.rmtree(run_dir(), ignore_errors=True)
