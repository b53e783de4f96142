"""Seed 001: how representational dissimilarity matrices (RDMs) change along training.

Fig. 1: epoch-to-epoch RDM stability for an early and a deep layer; Fig. 2: within- and
between-group dissimilarity per category group; RDMs at selected epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns

from ssltrace.figures import FIGURES, matrixplot, readers, style

RDM_UNITS = {
    "correlation": "1 − Pearson r",
    "cosine": "1 − cosine similarity",
    "euclidean": "squared Euclidean distance / feature",
}
STABILITY = {"pearson": "Pearson r", "spearman": "Spearman ρ", "kendall_tau_a": "Kendall τ_a"}


def rdm_units(settings: dict) -> str:
    return RDM_UNITS.get(settings.get("rdm_metric", "correlation"), "RDM units")


def _early_and_deep(settings: dict, data) -> list[str]:
    """The early and the deep layer of `data`, once each where settings make them one."""
    order = readers.layer_order(settings, data["layer"])
    return list(dict.fromkeys(readers.early_deep(settings, order)))


@FIGURES.register("rdm_stability")
def rdm_stability(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 001 Fig. 1: similarity of each epoch's RDM to the previous epoch's, early vs deep.

    Input `table` (trajectory.tsv, metrics `rdm_stability_*`). Settings `early_layer`,
    `deep_layer`. One row of panels per comparison measure in the table.
    """
    data = readers.read_prefixed(inputs, "rdm_stability_")
    layers = _early_and_deep(settings, data)
    measures = [m for m in dict.fromkeys(data["metric"])]
    colours = style.method_palette(style.ordered_methods(data["method"]))
    figsize = (3.6 * len(layers) + 1.6, 2.8 * len(measures))
    fig, axes = style.panels(len(measures), len(layers), figsize, sharex=True)
    for r, measure in enumerate(measures):
        how = measure.removeprefix("rdm_stability_")
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            rows = data[(data["metric"] == measure) & (data["layer"] == layer)]
            style.mean_sd_lines(ax, rows, "epoch", colours, marker=".")
            ax.set_title(f"{'early' if c == 0 else 'deep'} layer: {layer}")
            ax.set_ylabel(f"RDM stability\n({STABILITY.get(how, how)}, epoch e−1 vs e)")
            style.epoch_axis(ax, label=r == len(measures) - 1)
            sns.despine(ax=ax)
    style.method_legend(
        fig,
        colours,
        title=f"Method\n({style.seeds_note(style.seed_count(data))})",
        loc="outside right upper",
    )
    fig.suptitle("Epoch-to-epoch RDM stability (seed 001 Fig. 1)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("category_dissimilarity")
def category_dissimilarity(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 001 Fig. 2: within-group (solid) and between-group (dashed) dissimilarity vs epoch.

    Input `table` (trajectory.tsv, metrics `within_dissimilarity/<group>` and
    `between_dissimilarity/<group>`). Rows: early and deep layer; columns: category groups.
    """
    import matplotlib.pyplot as plt

    within = readers.read_prefixed(inputs, "within_dissimilarity/")
    between = readers.read_prefixed(inputs, "between_dissimilarity/")
    layers = _early_and_deep(settings, within)
    groups = list(dict.fromkeys(within["metric"].str.split("/", n=1).str[1]))
    colours = style.method_palette(style.ordered_methods(within["method"]))
    figsize = (2.8 * len(groups) + 1.8, 2.6 * len(layers))
    fig, axes = style.panels(len(layers), len(groups), figsize, sharex=True, sharey="row")
    for r, layer in enumerate(layers):
        for c, group in enumerate(groups):
            ax = axes[r, c]
            for part, linestyle in ((within, "-"), (between, "--")):
                kind = part["metric"].iloc[0].split("/", 1)[0]
                rows = part[(part["metric"] == f"{kind}/{group}") & (part["layer"] == layer)]
                style.mean_sd_lines(ax, rows, "epoch", colours, linestyle=linestyle)
            ax.set_title(f"{group} · {layer}")
            if c == 0:
                ax.set_ylabel(f"Mean dissimilarity\n({rdm_units(settings)})")
            style.epoch_axis(ax, label=r == len(layers) - 1)
            sns.despine(ax=ax)
    handles = [plt.Line2D([], [], color=c, lw=2, label=m) for m, c in colours.items()] + [
        plt.Line2D([], [], color="0.3", ls="-", label="within group"),
        plt.Line2D([], [], color="0.3", ls="--", label="between groups"),
    ]
    fig.legend(
        handles=handles,
        title=f"({style.seeds_note(style.seed_count(within))})",
        loc="outside right upper",
        frameon=False,
    )
    fig.suptitle("Within- vs between-category dissimilarity along training (seed 001 Fig. 2)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("rdm_snapshots")
def rdm_snapshots(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 001: RDMs of the deep layer at selected epochs (rows methods, columns epochs).

    Inputs `rdms:METHOD:SEED` (trajectory `_rdms.npz`); the mean over seeds is shown (all seeds
    see the same probe images). Settings `methods`, `epochs`, `deep_layer`.
    """

    runs = readers.run_inputs(inputs, "rdms")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    first = readers.load_arrays(next(iter(runs.values())), ["epochs", "layers"])
    order = readers.layer_order(settings, first["layers"])
    layer = readers.early_deep(settings, order)[1]
    analysed = set()
    for path in runs.values():
        analysed |= set(readers.load_arrays(path, ["epochs"])["epochs"].tolist())
    epochs = readers.chosen_epochs(settings, analysed)

    panels, meta = {}, None
    for method in methods:
        means, meta = matrixplot.seed_means(
            runs, method, "rdms", ["group_of_image", "groups"], epochs
        )
        index = meta["layers"].tolist().index(layer)
        for epoch, (mean, n_seeds) in means.items():
            by_group = _group_order(meta["group_of_image"])
            rdm = mean[index][np.ix_(by_group, by_group)]
            panels[method, epoch] = (matrixplot.offdiagonal(rdm), n_seeds)
    vmin, vmax = matrixplot.shared_limits([p for p, _ in panels.values()], robust=True)

    size = 2.0
    figsize = (size * len(epochs) + 1.4, size * len(methods) + 0.8)
    fig, axes = style.panels(len(methods), len(epochs), figsize)
    colours = style.method_palette(methods)
    image = None
    # Group names under the lowest drawn panel of each column (late epochs lack `untrained`).
    lowest = {e: max(r for r, m in enumerate(methods) if (m, e) in panels) for e in epochs}
    for r, method in enumerate(methods):
        for c, epoch in enumerate(epochs):
            ax = axes[r, c]
            if (method, epoch) not in panels:
                ax.axis("off")
                ax.text(
                    0.5,
                    0.5,
                    f"{method}\nnot analysed\nat epoch {epoch}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="0.5",
                    transform=ax.transAxes,
                )
                continue
            matrix, n_seeds = panels[method, epoch]
            image = matrixplot.heatmap(ax, matrix, vmin, vmax)
            matrixplot.group_ticks(
                ax,
                meta["group_of_image"][_group_order(meta["group_of_image"])],
                meta["groups"],
                x=r == lowest[epoch],
                y=c == 0,
            )
            ax.set_title(f"{method} · epoch {epoch}", color=colours[method], fontsize=8)
    bar = fig.colorbar(image, ax=axes, shrink=0.6)
    bar.set_label(f"Dissimilarity ({rdm_units(settings)}; 2–98th pct. range)")
    fig.suptitle(f"RDMs of {layer} at selected epochs, mean over seeds (seed 001)")
    return style.save(fig, stem, *readers.formats(settings))


def _group_order(group_of_image: np.ndarray) -> np.ndarray:
    """Images group by group (the probe set is drawn that way; this keeps it so), ungrouped last."""
    groups = np.asarray(group_of_image)
    return np.argsort(np.where(groups < 0, groups.max() + 1, groups), kind="stable")
