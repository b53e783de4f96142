"""The resumable training state kept in `out_dir/.state/`, outside the declared outputs.

Snakemake deletes a failed job's declared outputs, so everything a rerun needs lives here:

    .state/fingerprint.json     what the state was trained with (run without epochs, data hash;
                                the torch threads of a deterministic CPU run)
    .state/resume.pt            optimiser, grad scaler, RNG states, log rows, last finished epoch
                                and that epoch's checkpoint (model incl. EMA/queue)
    .state/epochs/epoch_EEE.pt  the checkpoint of every finished epoch

`out_dir/checkpoints/epoch_EEE.pt` are hard links to the files in `.state/epochs/` (copies
where the file system has no hard links), so a deleted output is restored by relinking.
`resume.pt` is written last in each epoch: it is the commit point of that epoch.

A link shares its file with the stored epoch, so damage to a published checkpoint is damage to
the stored one: every stored epoch is verified (zip CRC-32) before a run resumes. The last
epoch can be rewritten from `resume.pt`; an earlier one cannot (only the last epoch's optimiser
state is kept), so the run then starts over. `out_dir/.train.lock` keeps a second trainer
(e.g. one started while an orphan of a killed Snakemake still runs) from training it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ssltrace import io

CHECKPOINT_FORMAT = "ssltrace-checkpoint/1"


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def fingerprint(description: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `description` (the run as trained, plus the data)."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_difference(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, as 'key: old -> new'."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{path}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")
            else:
                out.extend(describe_difference(old[key], new[key], path))
        return out
    return [] if old == new else [f"{prefix or 'value'}: {old!r} -> {new!r}"]


class StateStore:
    """Read and write one run's `.state/` directory and its checkpoint links."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / ".state"
        self.epochs_dir = self.root / "epochs"
        self.checkpoints_dir = self.out_dir / "checkpoints"
        self.resume_path = self.root / "resume.pt"
        self.fingerprint_path = self.root / "fingerprint.json"
        self.lock_path = self.out_dir / ".train.lock"  # outside .state: reset() removes that

    @contextlib.contextmanager
    def locked(self, log: Callable[[str], None]) -> Iterator[None]:
        """Hold the run's lock; wait (saying so) while another process holds it."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "?"
                log(
                    f"waiting: process {holder} is training this run ({self.out_dir}); it may "
                    "be left from a killed Snakemake, and ends when its epochs are done"
                )
                fcntl.flock(fh, fcntl.LOCK_EX)
            except OSError:
                pass  # a file system without locks: run unguarded, as before there was a lock
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield

    def saved_description(self) -> dict | None:
        if not self.fingerprint_path.is_file():
            return None
        try:
            saved = json.loads(self.fingerprint_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return saved if isinstance(saved, dict) else None

    def mismatch(self, description: Mapping[str, Any], threads: int | None = None) -> str | None:
        """Why the saved state cannot be resumed under `description` (trained on `threads`
        torch threads, when they decide its numbers); None if it can."""
        saved = self.saved_description()
        if saved is None:
            return None if not self.root.exists() else "no readable fingerprint.json"
        wanted = fingerprint(description)
        described = saved.get("description")
        # A damaged fingerprint.json is still trusted where either half proves the settings:
        # the recorded hash, or a description that hashes to the wanted one.
        if saved.get("fingerprint") != wanted and not (
            isinstance(described, Mapping) and fingerprint(described) == wanted
        ):
            changes = describe_difference(described or {}, dict(description))
            return "; ".join(changes) or "fingerprint differs"
        before = saved.get("threads")
        if threads is not None and before is not None and before != threads:
            return (
                f"it was trained deterministically on the CPU with {before} torch threads, now "
                f"{threads}: its numbers depend on the thread count, and resuming would mix "
                f"both (set train.threads: {before} to resume it)"
            )
        return None

    def record(self, description: Mapping[str, Any], threads: int | None = None) -> None:
        """Write fingerprint.json for `description` (and the threads, when they matter)."""
        io.write_json(
            self.fingerprint_path,
            {
                "fingerprint": fingerprint(description),
                "description": dict(description),
                "threads": threads,
            },
        )

    def reset(self, description: Mapping[str, Any], threads: int | None = None) -> None:
        """Forget all saved state and checkpoint links; record the new description."""
        shutil.rmtree(self.root, ignore_errors=True)
        for path in self.checkpoints_dir.glob("epoch_*.pt"):
            path.unlink()
        self.record(description, threads)

    def load_resume(self) -> tuple[dict | None, str | None]:
        """(the last committed state, None), or (None, why it cannot be used; None when no
        epoch was committed). A damaged resume.pt is removed."""
        if not self.resume_path.is_file():
            return None, None
        try:
            return io.torch_load(self.resume_path), None
        except io.ArtifactReadError as error:
            return None, error.problem

    def save_resume(self, state: Mapping[str, Any]) -> None:
        io.torch_save(self.resume_path, dict(state))

    def epoch_path(self, epoch: int) -> Path:
        return self.epochs_dir / checkpoint_name(epoch)

    def load_epoch(self, epoch: int) -> dict:
        return io.torch_load(self.epoch_path(epoch))

    def save_epoch(self, epoch: int, checkpoint: Mapping[str, Any]) -> None:
        io.torch_save(self.epoch_path(epoch), dict(checkpoint))
        self._link(epoch)

    def damaged_epochs(self, last_epoch: int) -> dict[int, str]:
        """Stored epochs 0..last_epoch that are missing or damaged, with why; damaged ones are
        removed. Every stored epoch is read (CRC-32 of each member): a published checkpoint
        is the same file, so whatever damaged it damaged this one."""
        bad = {}
        for epoch in range(last_epoch + 1):
            path = self.epoch_path(epoch)
            if not path.is_file():
                bad[epoch] = f"{path} is missing"
                continue
            try:
                io.verify_zip(path)
            except io.ArtifactReadError as error:
                bad[epoch] = error.problem
        return bad

    def expose(self, last_epoch: int) -> None:
        """Make checkpoints/ hold exactly epochs 0..last_epoch, linked to the saved weights."""
        wanted = {checkpoint_name(e) for e in range(last_epoch + 1)}
        for path in self.checkpoints_dir.glob("epoch_*.pt"):
            if path.name not in wanted:
                path.unlink()
        for epoch in range(last_epoch + 1):
            self._link(epoch)

    def _link(self, epoch: int) -> None:
        source, link = self.epoch_path(epoch), self.checkpoints_dir / checkpoint_name(epoch)
        # Already the same file: relinking would be a no-op rename that leaves its temp behind.
        if link.exists() and os.path.samefile(source, link):
            return
        io.link_or_copy(source, link)
