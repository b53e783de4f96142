"""First-layer filters of the network along training (seed paper 003, Extended Data Fig. 4).

Seed 003 shows the kernels of each network's first convolution, which for good objectives
turn into oriented edge and colour-opponent detectors like V1's. The analysis reads the
kernels straight from the checkpoints (no activations needed): the first four-dimensional
weight of the backbone in the state dict's order (its input stem), at the epochs of
`filters.epochs` (null = the first and the last analysed epoch). The array `filters` holds
them as [epoch, out_channels, in_channels, k, k]; the table the mean L2 norm of the kernels
(`filter_norm`) and the mean share of each kernel's energy outside its DC component
(`filter_structure`: 0 for a flat kernel, 1 for a zero-mean one), whose growth over training
is the emergence of structured filters.
"""

from __future__ import annotations

import numpy as np

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Checkpoints, PerCheckpointAnalysis


def first_conv(state_dict: dict, prefix: str = "backbone.") -> tuple[str, np.ndarray]:
    """(name, weight [out, in, k, k]) of the first 4-D weight under `prefix` in the state
    dict's order (registration order: the input stem of every backbone of ssltrace.models)."""
    for name, value in state_dict.items():
        if name.startswith(prefix) and name.endswith("weight") and value.ndim == 4:
            return name, value.detach().cpu().numpy().astype(np.float32)
    raise ValueError(f"the checkpoint has no convolution weight under {prefix!r}")


def filter_structure(weights: np.ndarray) -> np.ndarray:
    """Per kernel [out]: 1 − (energy of its per-channel mean) / (its total energy)."""
    w = np.asarray(weights, dtype=np.float64)
    total = (w**2).sum(axis=(1, 2, 3))
    dc = (w.mean(axis=(2, 3)) ** 2).sum(axis=1) * w.shape[2] * w.shape[3]
    return np.where(total > 0, 1.0 - dc / np.where(total > 0, total, 1.0), 0.0)


def chosen(setting, analysed: list[int], key: str) -> list[int]:
    """Epochs of `setting` that this run analysed (an untrained run has epoch 0 only), or
    its first and last analysed epoch when `setting` is null; none at all is an error."""
    if setting is None:
        return sorted({min(analysed), max(analysed)})
    found = sorted(e for e in setting if e in analysed)
    if not found:
        raise ValueError(
            f"config key '{key}': none of epochs {sorted(setting)} is analysed in this run "
            f"(extract.epochs); analysed: {', '.join(map(str, analysed))}"
        )
    return found


@ANALYSES.register("filters")
class Filters(PerCheckpointAnalysis):
    """The stem's kernels at chosen epochs (seed 003 ED Fig. 4); probe column `weights`."""

    name = "filters"
    summary = "first-layer convolution kernels at chosen epochs (seed 003 ED Fig. 4)"
    inputs = {"checkpoints": Checkpoints()}
    arrays = ("filters",)
    stacked = "filters"
    sections = ("filters",)
    resources = {"mem_mb": 2000, "runtime": 10}

    def cache_settings(self):
        return {}

    def chosen_epochs(self, job):
        return chosen(self.settings["epochs"], list(job.epochs), "filters.epochs")

    def epoch(self, checkpoint):
        name, weights = first_conv(checkpoint["state_dict"])
        layer = name.removeprefix("backbone.").split(".")[0]
        norms = np.sqrt((weights.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
        rows = [
            (layer, "weights", "filter_norm", float(norms.mean())),
            (layer, "weights", "filter_structure", float(filter_structure(weights).mean())),
        ]
        arrays = {
            "filters": weights,
            "layer": np.array(layer),
            "epoch": np.int64(checkpoint["epoch"]),
        }
        return rows, arrays
