"""Seed 003: what the networks' units look like and prefer, and the embedding's layout.

Fig. 1d: MDS of the embedding; Extended Data Fig. 4: first-layer filters; Extended Data
Figs. 5-6: optimal stimuli of chosen channels. A layout, a filter bank or an image cannot be
averaged over seeds, so each method shows its lowest seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from ssltrace.figures import FIGURES, readers, style


def _first_seeds(inputs: dict, role: str, settings: dict) -> dict[str, Path]:
    """{method: its lowest seed's file}, methods in legend order (`figures.methods`)."""
    runs = readers.run_inputs(inputs, role)
    methods = readers.chosen_methods(settings, {m for m, _ in runs})
    return {m: runs[min((k for k in runs if k[0] == m), key=lambda k: k[1])] for m in methods}


def mosaic(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Images [n, h, w, c] (values in [0, 1]) tiled row-major on a white background."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    out = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c))
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        out[top : top + h, left : left + w] = image
    return out[..., 0] if c == 1 else out


def kernels_as_images(weights: np.ndarray) -> np.ndarray:
    """Kernels [out, in, k, k] -> images [out, k, k, in] in [0, 1], each kernel scaled by its
    own largest |weight| so that 0.5 (grey) is zero."""
    w = np.moveaxis(np.asarray(weights, dtype=np.float64), 1, -1)
    peak = np.abs(w).reshape(len(w), -1).max(axis=1)
    return 0.5 + 0.5 * w / np.where(peak > 0, peak, 1.0)[:, None, None, None]


def _show(ax, image: np.ndarray) -> None:
    ax.imshow(
        image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest"
    )
    ax.set_xticks([])
    ax.set_yticks([])


@FIGURES.register("mds_embedding")
def mds_embedding(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 1d: the MDS layout of the known-class probe's embedding, one row per
    method (lowest seed), one column per embedded epoch, points coloured by coarse class.

    Inputs `embedding:METHOD:SEED` (mds/embedding.npz).
    """
    files = _first_seeds(inputs, "embedding", settings)
    keys = ["embedding", "epochs", "layers", "coarse", "coarse_names"]
    found = {m: readers.load_arrays(p, keys) for m, p in files.items()}
    n_cols = max(len(f["epochs"]) for f in found.values())
    fig, axes = style.panels(len(found), n_cols, (2.8 * n_cols + 1.8, 2.7 * len(found)))
    names = next(iter(found.values()))["coarse_names"]
    colours = style.coarse_palette(len(names))
    for r, (method, f) in enumerate(found.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(f["epochs"]):
                ax.axis("off")
                continue
            xy = f["embedding"][c, 0]
            ax.scatter(xy[:, 0], xy[:, 1], s=5, c=[colours[k] for k in f["coarse"]], linewidths=0)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_title(f"{method}, epoch {int(f['epochs'][c])}", fontsize=8)
    handles = [
        Line2D([], [], marker="o", ls="none", color=colour, label=str(name))
        for name, colour in zip(names, colours, strict=True)
    ]
    fig.legend(handles=handles, title="Coarse class", frameon=False, loc="outside right upper")
    layer = str(next(iter(found.values()))["layers"][0])
    fig.suptitle(f"MDS of the embedding, {layer}, cosine dissimilarity (seed 003 Fig. 1d)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("first_layer_filters")
def first_layer_filters(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Fig. 4: the first convolution's kernels, one row per method
    (lowest seed), one column per chosen epoch; each kernel scaled to its own range, grey = 0.

    Inputs `filters:METHOD:SEED` (filters/filters.npz).
    """
    files = _first_seeds(inputs, "filters", settings)
    found = {m: readers.load_arrays(p, ["filters", "epochs"]) for m, p in files.items()}
    n_cols = max(len(f["epochs"]) for f in found.values())
    fig, axes = style.panels(len(found), n_cols, (3.0 * n_cols, 3.1 * len(found)))
    for r, (method, f) in enumerate(found.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(f["epochs"]):
                ax.axis("off")
                continue
            images = kernels_as_images(f["filters"][c])
            _show(ax, mosaic(images, int(np.ceil(np.sqrt(len(images))))))
            ax.set_title(f"{method}, epoch {int(f['epochs'][c])}", fontsize=8)
    fig.suptitle("First-layer filters (seed 003 Extended Data Fig. 4)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("optimal_stimuli")
def optimal_stimuli(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Figs. 5-6: per method (lowest seed) and layer, the images that
    maximise each chosen channel at the last optimised epoch.

    Inputs `stimuli:METHOD:SEED` (stimuli/stimuli.npz).
    """
    files = _first_seeds(inputs, "stimuli", settings)
    keys = ["stimuli", "epochs", "layers", "channels"]
    found = {m: readers.load_arrays(p, keys) for m, p in files.items()}
    rows = [(m, i) for m, f in found.items() for i in range(len(f["layers"]))]
    width = 1.1 * max(len(f["channels"]) for f in found.values()) + 1.5
    fig, axes = style.panels(len(rows), 1, (width, 1.4 * len(rows) + 0.6))
    for ax, (method, i) in zip(axes[:, 0], rows, strict=True):
        f = found[method]
        _show(ax, mosaic(f["stimuli"][-1, i], len(f["channels"]), pad=2))
        ax.set_ylabel(
            f"{method}\n{f['layers'][i]}", fontsize=7, rotation=0, ha="right", va="center"
        )
        ax.set_title(
            f"epoch {int(f['epochs'][-1])}; channels {', '.join(map(str, f['channels']))}",
            fontsize=6,
        )
    fig.suptitle("Optimal stimuli (seed 003 Extended Data Figs. 5-6)")
    return style.save(fig, stem, *readers.formats(settings))
