"""Seed 004 Fig. 1: UMAP of the sample, fine and coarse levels before and after training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssltrace.figures import FIGURES, readers, style

LEVEL_TITLES = {"sample": "augmentations of images", "fine": "classes", "coarse": "superclasses"}
KEYS = ["coords", "level", "group", "group_name", "point_epoch", "layer"]


@FIGURES.register("umap_levels")
def umap_levels(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Rows: label levels; columns: per method (`figures.methods`, default all) its first
    and last analysed epoch; points coloured by group. One run (the lowest seed) per method:
    UMAP coordinates of different runs are not comparable, so they are not averaged.

    Inputs `embeddings:METHOD:SEED` (umap `_embeddings.npz`).
    """
    runs = readers.run_inputs(inputs, "embeddings")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    shown = {m: min(s for mm, s in runs if mm == m) for m in methods}
    data = {m: readers.load_arrays(runs[m, shown[m]], KEYS) for m in methods}
    levels = [lv for lv in LEVEL_TITLES if any(lv in d["level"] for d in data.values())]
    columns = [(m, e) for m in methods for e in sorted(set(data[m]["point_epoch"].tolist()))]
    fig, axes = style.panels(
        len(levels), len(columns), (2.3 * len(columns) + 0.4, 2.3 * len(levels))
    )
    for c, (method, epoch) in enumerate(columns):
        found = data[method]
        for r, level in enumerate(levels):
            ax = axes[r, c]
            pick = (found["point_epoch"] == epoch) & (found["level"] == level)
            colours = np.array(
                style.coarse_palette(max(int(found["group"][pick].max(initial=0)) + 1, 1))
            )
            ax.scatter(*found["coords"][pick].T, c=colours[found["group"][pick]], s=4, linewidths=0)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                when = "before training" if epoch == 0 else f"epoch {epoch}"
                ax.set_title(f"{method} (seed {shown[method]}), {when}", fontsize=8)
            if c == 0:
                ax.set_ylabel(LEVEL_TITLES[level])
    layer = str(next(iter(data.values()))["layer"])
    fig.suptitle(f"UMAP of {layer} at three levels (seed 004, Fig. 1)")
    return style.save(fig, stem, *readers.formats(settings))
