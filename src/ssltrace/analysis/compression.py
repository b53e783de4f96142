"""Information compression along training (seed paper 004 §4, Fig. 3 middle).

Per analysed epoch and layer (every extracted layer, or `compression.layers`), the mutual
information I(X; Z) between the input images X of the known-class probe set (pixels in
[0, 1], flattened) and the layer's representation Z of them, estimated with MINE
(`ssltrace.analysis.mine`, Belghazi et al. 2018) and averaged over `compression.inits` MINE
initialisations (the paper: 5). Rows: `mi` (the mean, nats), `mi_sd` (SD over
initialisations); matrix file `mi`: [epoch, layer, init] estimates.
"""

from __future__ import annotations

import numpy as np

from ssltrace import io
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, ProbeFile, layer_names
from ssltrace.analysis.mine import mine_average

# Settings passed to mine_estimate (the section's other keys choose what is measured).
MINE_KEYS = (
    "iterations",
    "batch_size",
    "hidden",
    "depth",
    "lr",
    "ema",
    "eval_shuffles",
    "standardise",
)


@ANALYSES.register("compression")
class Compression(PerEpochAnalysis):
    """MINE estimate of I(input; layer) per epoch and layer, mean over initialisations."""

    name = "compression"
    summary = "MINE mutual information between input and each layer per epoch (seed 004 §4)"
    inputs = {"known": Activations("known"), "images": ProbeFile("known")}
    arrays = ("mi",)
    stacked = "mi"
    sections = ("compression",)
    resources = {"mem_mb": 8000, "runtime": 240, "gpu": 1}

    def prepare(self, job):
        images = io.load_npz(job.inputs["images"], keys=["images"])["images"]
        # Pixels in [0, 1], one row per image, in the probe set's order (that of activations).
        self.pixels = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0

    def epoch(self, role, acts):
        layers = chosen_layers(layer_names(acts), self.settings.get("layers"), "compression")
        if acts[layers[0]].shape[0] != self.pixels.shape[0]:
            raise ValueError(
                f"activations have {acts[layers[0]].shape[0]} rows but probe file 'known' has "
                f"{self.pixels.shape[0]} images: extract again from the current probe set"
            )
        options = {k: self.settings[k] for k in MINE_KEYS}
        rows, values = [], []
        for layer in layers:
            found = mine_average(
                self.pixels,
                acts[layer],
                inits=self.settings["inits"],
                seed=self.settings["seed"],
                device=self.settings.get("device", "auto"),
                **options,
            )
            rows += [(layer, "known", "mi", found["mean"]), (layer, "known", "mi_sd", found["sd"])]
            values.append(found["values"])
        return rows, {"mi": np.stack(values), "layers": np.array(layers)}


def chosen_layers(available: list[str], wanted: list[str] | None, section: str) -> list[str]:
    """`wanted` (null = all) in extraction order; a layer not extracted is an error."""
    if wanted is None:
        return available
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ValueError(
            f"config key '{section}.layers': layer {missing[0]!r} was not extracted; "
            f"extracted: {', '.join(available)}"
        )
    return [name for name in available if name in wanted]
