"""Seed 000 Fig. 9: human (CIFAR-10H) and model few-shot confusion matrices side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssltrace.figures import FIGURES, matrixplot, readers, style
from ssltrace.figures.clusters import best_layers


@FIGURES.register("human_confusion")
def human_confusion(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Human confusion, then each method's confusion at its best layer (final epoch).

    The best layer has the highest seed-mean `human_spearman_full` (the paper's measure,
    seed 000 §2.6.2); titles give it and the off-diagonal one. Diagonals are masked:
    the comparison is about which wrong classes are chosen, and correct answers would swamp
    the colour scale. Inputs `table` (human.tsv) and `confusion:METHOD:SEED`. Settings `methods`.
    """

    runs = readers.run_inputs(inputs, "confusion")
    best = best_layers(inputs, settings, "human_spearman_full")
    offdiag = best_layers(inputs, settings, "human_spearman_offdiag", at=best)
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    panels = {}
    human, names = None, None
    for method in methods:
        if method not in best.index:
            raise ValueError(
                f"{readers.input_path(inputs, 'table')} has no human_spearman_full rows "
                f"for method {method!r}"
            )
        mean, meta, epoch, n_seeds = matrixplot.seed_mean(
            runs, method, "confusion", ["human", "class_names"]
        )
        if human is None:
            human, names = meta["human"], [str(n) for n in meta["class_names"]]
        elif not np.allclose(meta["human"], human):
            raise ValueError(f"confusion files of {method} hold another human matrix")
        layer = best.loc[method, "layer"]
        panels[method] = (mean[meta["layers"].tolist().index(layer)], layer, epoch, n_seeds)

    n = len(methods) + 1
    fig, axes = style.panels(1, n, (3.0 * n, 3.6))
    colours = style.method_palette(methods)
    shown = [("human", human, "Human (CIFAR-10H)", "black")]
    for method in methods:
        matrix, layer, epoch, n_seeds = panels[method]
        rho, rho_off = best.loc[method, "mean"], offdiag.loc[method, "mean"]
        title = (
            f"{method} · {layer}, epoch {epoch}\nρ = {rho:.2f} (whole), {rho_off:.2f} "
            f"(off-diag.), {n_seeds} seed(s)"
        )
        shown.append((method, matrix, title, colours[method]))
    for ax, (key, matrix, title, colour) in zip(axes[0], shown, strict=True):
        off = matrixplot.offdiagonal(matrix)
        image = matrixplot.heatmap(ax, off, 0.0, matrixplot.shared_limits([off])[1])
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names if ax is axes[0, 0] else [], fontsize=7)
        ax.set_xlabel("Chosen class")
        ax.set_title(title, color=colour, fontsize=8)
        bar = fig.colorbar(image, ax=ax, shrink=0.7, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        human_panel = key == "human"
        label = "mean choices per image" if human_panel else "P(chosen class | true class)"
        bar.set_label(label, fontsize=7)
    axes[0, 0].set_ylabel("True class")
    fig.suptitle("Human vs model confusions, diagonal masked (seed 000 Fig. 9)")
    return style.save(fig, stem, *readers.formats(settings))
