"""The resumable training state kept in `out_dir/.state/`, outside the declared outputs.

Snakemake deletes a failed job's declared outputs, so everything a rerun needs lives here:

    .state/fingerprint.json     what the state was trained with (run without epochs, data hash)
    .state/resume.pt            optimiser, grad scaler, RNG states, log rows, last finished epoch
    .state/epochs/epoch_EEE.pt  the checkpoint of every finished epoch (model incl. EMA/queue)

`out_dir/checkpoints/epoch_EEE.pt` are hard links to the files in `.state/epochs/` (copies
where the file system has no hard links), so a deleted output is restored by relinking.
`resume.pt` is written last in each epoch: it is the commit point of that epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
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

    def saved_description(self) -> dict | None:
        if not self.fingerprint_path.is_file():
            return None
        try:
            return json.loads(self.fingerprint_path.read_text())
        except json.JSONDecodeError:
            return None

    def mismatch(self, description: Mapping[str, Any]) -> str | None:
        """Why the saved state cannot be resumed under `description`; None if it can."""
        saved = self.saved_description()
        if saved is None:
            return None if not self.root.exists() else "no readable fingerprint.json"
        if saved.get("fingerprint") == fingerprint(description):
            return None
        changes = describe_difference(saved.get("description", {}), dict(description))
        return "; ".join(changes) or "fingerprint differs"

    def reset(self, description: Mapping[str, Any]) -> None:
        """Forget all saved state and checkpoint links; record the new description."""
        shutil.rmtree(self.root, ignore_errors=True)
        for path in self.checkpoints_dir.glob("epoch_*.pt"):
            path.unlink()
        io.write_json(
            self.fingerprint_path,
            {"fingerprint": fingerprint(description), "description": dict(description)},
        )

    def load_resume(self) -> dict | None:
        """The last committed state, or None when no epoch finished or its weights are gone."""
        if not self.resume_path.is_file():
            return None
        state = io.torch_load(self.resume_path)
        if not self.epoch_path(state["epoch"]).is_file():
            return None
        return state

    def save_resume(self, state: Mapping[str, Any]) -> None:
        io.torch_save(self.resume_path, dict(state))

    def epoch_path(self, epoch: int) -> Path:
        return self.epochs_dir / checkpoint_name(epoch)

    def load_epoch(self, epoch: int) -> dict:
        return io.torch_load(self.epoch_path(epoch))

    def save_epoch(self, epoch: int, checkpoint: Mapping[str, Any]) -> None:
        io.torch_save(self.epoch_path(epoch), dict(checkpoint))
        self._link(epoch)

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
