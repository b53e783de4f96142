"""Content-keyed cache of per-epoch results, outside Snakemake's declared outputs.

Jobs are per run, so extending a study (more epochs) reruns a run's extract and analysis jobs;
Snakemake deletes their declared outputs first. Each epoch's activations and each epoch's
analysis results are therefore also kept here under a key that hashes everything they depend
on (checkpoint bytes, probe set bytes, settings, ssltrace version); a rerun links or loads
what it already has and computes only new or changed epochs.

Entries are verified when they are handed out (every member's CRC-32, `ssltrace.io`): a
damaged one is dropped and recomputed, never linked into a result. An entry shares its inode
with the file it was linked to, so damage to either is damage to both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import ssltrace
from ssltrace import io


def file_digest(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def make_key(*parts: Any) -> str:
    """sha256 of the parts' canonical JSON, with the ssltrace version mixed in."""
    text = json.dumps([ssltrace.__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class EpochCache:
    """Files named by key under `root/<stage>/`; `root=None` disables caching. `log` hears
    of every damaged entry dropped."""

    def __init__(
        self,
        root: str | os.PathLike | None,
        stage: str,
        log: Callable[[str], None] | None = None,
    ):
        self.dir = Path(root) / stage if root is not None else None
        self.log = log or (lambda _message: None)

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def path(self, key: str) -> Path:
        assert self.dir is not None
        return self.dir / key[:2] / f"{key}.npz"

    def lookup(self, key: str) -> Path | None:
        if not self.enabled:
            return None
        path = self.path(key)
        return path if path.exists() else None

    def place(self, key: str, dest: Path) -> bool:
        """Link the cached file for `key` to `dest`, verified first; False when there is none
        (or it was damaged, and is now dropped)."""
        cached = self.lookup(key)
        if cached is None:
            return False
        try:
            io.verify_zip(cached)
        except io.ArtifactReadError as error:
            self._dropped(error)
            return False
        io.link_or_copy(cached, dest)
        return True

    def keep(self, key: str, src: Path) -> None:
        """Remember `src` (already written atomically) under `key`."""
        if self.enabled:
            io.link_or_copy(src, self.path(key))

    def load_result(self, key: str) -> tuple[list[dict], dict[str, np.ndarray]] | None:
        cached = self.lookup(key)
        if cached is None:
            return None
        try:
            arrays = io.load_npz(cached)
            rows = json.loads(str(arrays.pop("__rows__")))
        except io.ArtifactReadError as error:
            self._dropped(error)
            return None
        except (KeyError, ValueError):  # an entry of another layout: recompute, overwrite
            return None
        return rows, arrays

    def save_result(self, key: str, rows: list[dict], arrays: dict[str, np.ndarray]) -> None:
        if self.enabled:
            io.save_npz(self.path(key), {**arrays, "__rows__": np.array(json.dumps(rows))})

    def _dropped(self, error: io.ArtifactReadError) -> None:
        error.path.unlink(missing_ok=True)  # io removes damaged files; refused ones too here
        self.log(f"dropped a damaged cache entry ({error.problem}); recomputing it")
