"""Seed 000 Fig. 4: pairwise few-shot error matrices, classes grouped by coarse class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssltrace.figures import FIGURES, matrixplot, readers, style


@FIGURES.register("fewshot_error_matrices")
def fewshot_error_matrices(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Error matrices at each run's final epoch, mean over seeds; rows methods, columns layers.

    Inputs `errors:METHOD:SEED` (fewshot `_errors.npz`). Settings `methods`, `matrix_layers`.
    """

    runs = readers.run_inputs(inputs, "errors")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    labels = ["class_names", "class_coarse", "coarse_names"]
    panels = {m: matrixplot.seed_mean(runs, m, "errors", labels) for m in methods}
    meta = panels[methods[0]][1]
    order = readers.layer_order(settings, meta["layers"])
    layers = readers.matrix_layers(settings, order)
    # Classes grouped by coarse class (stable, so the fine order within a group is kept).
    by_coarse = np.argsort(meta["class_coarse"], kind="stable")
    groups = meta["class_coarse"][by_coarse]

    shown = {}
    for method, (mean, run_meta, epoch, n_seeds) in panels.items():
        if not np.array_equal(run_meta["class_names"], meta["class_names"]):
            raise ValueError(f"error matrices of {method} cover other classes than {methods[0]}")
        index = [run_meta["layers"].tolist().index(layer) for layer in layers]
        picked = matrixplot.offdiagonal(mean[index][:, by_coarse][:, :, by_coarse])
        shown[method] = (picked, epoch, n_seeds)
    vmin, vmax = matrixplot.shared_limits([p for p, _, _ in shown.values()])

    size = 2.4
    figsize = (size * len(layers) + 1.2, size * len(methods) + 0.8)
    fig, axes = style.panels(len(methods), len(layers), figsize)
    colours = style.method_palette(methods)
    for r, method in enumerate(methods):
        picked, epoch, n_seeds = shown[method]
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            image = matrixplot.heatmap(ax, picked[c], vmin, vmax)
            matrixplot.group_ticks(
                ax, groups, meta["coarse_names"], x=r == len(methods) - 1, y=c == 0
            )
            ax.set_title(f"{method} · {layer}", color=colours[method])
            if c == 0:
                ax.set_ylabel(f"True class\n(epoch {epoch}, {n_seeds} seed(s))")
            if r == len(methods) - 1:
                ax.set_xlabel("Competing class")
    bar = fig.colorbar(image, ax=axes, shrink=0.6)
    bar.set_label("Pairwise m-shot error (fraction; mean over seeds)")
    fig.suptitle("Pairwise few-shot error, classes grouped by coarse class (seed 000 Fig. 4)")
    return style.save(fig, stem, *readers.formats(settings))
