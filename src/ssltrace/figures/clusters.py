"""Seed 000 Figs. 6-7, S3 and §2.6.1: hierarchical clusters of the error matrices vs the
coarse classes.

Figs. 6-7 and the cluster histograms show each method at its best layer: the layer with the
highest mutual information between clusters and coarse classes at the final epoch, averaged
over seeds (`mi_bits`); Fig. S3 shows the correspondence at every layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssltrace.analysis.clustering import best_layer
from ssltrace.figures import FIGURES, matrixplot, readers, style


def best_layers(
    inputs: dict, settings: dict, metric: str, at: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per method: the layer with the highest seed-mean `metric` at the final epoch (or, with
    `at`, the seed-mean `metric` at the layers `at` chose), columns `layer` and `mean`."""
    data = readers.final_epoch(readers.read_metrics(inputs, [metric]))
    means = style.summarise(data, ["method", "layer"]).rename(columns={"mean": "value"})
    if at is not None:
        chosen = means.merge(at[["layer"]].reset_index(), on=["method", "layer"])
        return chosen.rename(columns={"value": "mean"}).set_index("method")
    best = best_layer(means.assign(metric=metric), metric, by=("method",))
    return best.rename(columns={"value": "mean"}).set_index("method")


@FIGURES.register("dendrograms")
def dendrograms(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 000 Fig. 6: dendrogram of the novel classes at the best layer, by coarse class.

    Inputs `table` (clustering.tsv) and `clusters:METHOD:SEED` (`_clusters.npz`); a linkage
    cannot be averaged, so each method shows its lowest seed. Settings `methods`.
    """
    import matplotlib.pyplot as plt

    runs = readers.run_inputs(inputs, "clusters")
    best = best_layers(inputs, settings, "mi_bits")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    _check_best(best, methods, inputs)
    trees = {m: _first_seed_linkage(runs, m, best.loc[m, "layer"]) for m in methods}

    n_classes = len(next(iter(trees.values()))[1]["class_names"])
    figsize = (3.2 * len(methods) + 1.5, max(3.0, 0.16 * n_classes + 1.4))
    fig, axes = style.panels(1, len(methods), figsize)
    colours = style.method_palette(methods)
    for ax, method in zip(axes[0], methods, strict=True):
        linkage, meta, epoch, seed = trees[method]
        _dendrogram(ax, linkage, meta)
        layer = best.loc[method, "layer"]
        mi = best.loc[method, "mean"]
        ax.set_title(
            f"{method} · {layer}\nMI {mi:.2f} bits (seed mean)\nseed {seed}, epoch {epoch}",
            color=colours[method],
            fontsize=8,
        )
        ax.set_xlabel("Dissimilarity\n(1 − symmetrised pairwise error)")
    names = meta["coarse_names"]
    handles = [
        plt.Line2D([], [], color=c, lw=3, label=str(n))
        for n, c in zip(names, style.coarse_palette(len(names)), strict=True)
    ]
    fig.legend(handles=handles, title="Coarse class", loc="outside right upper", frameon=False)
    fig.suptitle("Hierarchical clustering of novel classes at the best layer (seed 000 Fig. 6)")
    return style.save(fig, stem, *readers.formats(settings))


def _check_best(best: pd.DataFrame, methods: list[str], inputs: dict) -> None:
    missing = [m for m in methods if m not in best.index]
    if missing:
        raise ValueError(
            f"{readers.input_path(inputs, 'table')} has no mi_bits rows for method {missing[0]!r}"
        )


def _first_seed_linkage(runs: dict, method: str, layer: str):
    seed, path = min((s, p) for (m, s), p in runs.items() if m == method)
    arrays = readers.load_arrays(
        path, ["linkage", "epochs", "layers", "class_names", "class_coarse", "coarse_names"]
    )
    layers = arrays["layers"].tolist()
    if layer not in layers:
        raise ValueError(f"{path}: no layer {layer!r}; layers: {', '.join(layers)}")
    last = int(np.argmax(arrays["epochs"]))
    return arrays["linkage"][last, layers.index(layer)], arrays, int(arrays["epochs"][last]), seed


def _dendrogram(ax, linkage: np.ndarray, meta: dict) -> None:
    """A marker in the coarse colour beside each leaf; a link takes that colour when all its
    leaves share it (grey otherwise)."""
    from matplotlib.transforms import blended_transform_factory
    from scipy.cluster import hierarchy

    coarse = meta["class_coarse"]
    colours = style.coarse_palette(len(meta["coarse_names"]))
    n = len(coarse)
    members = [{int(c)} for c in coarse]
    for a, b, _dist, _size in linkage:
        members.append(members[int(a)] | members[int(b)])

    def link_colour(node: int) -> str:
        below = members[node]
        return colours[next(iter(below))] if len(below) == 1 else "0.55"

    tree = hierarchy.dendrogram(
        linkage,
        labels=[str(s) for s in meta["class_names"]],
        orientation="right",
        link_color_func=link_colour,
        leaf_font_size=7 if n <= 30 else 5,
        ax=ax,
    )
    # scipy places leaf i of the drawing order at y = 10 i + 5.
    leaf_y = 10 * np.arange(n) + 5
    ax.scatter(
        np.full(n, -0.03),
        leaf_y,
        c=[colours[coarse[leaf]] for leaf in tree["leaves"]],
        marker="s",
        s=18,
        transform=blended_transform_factory(ax.transAxes, ax.transData),
        clip_on=False,
    )
    ax.tick_params(axis="y", length=0, pad=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


@FIGURES.register("correspondence")
def correspondence(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 000 Fig. 7: clusters x coarse classes at the best layer, mean counts over seeds.

    Rows are clusters matched one-to-one to coarse classes by maximum-weight assignment (done by
    the clustering stage), so a strong diagonal means clusters recover the coarse classes.
    Inputs `table` (clustering.tsv) and `clusters:METHOD:SEED`. Settings `methods`.
    """

    runs = readers.run_inputs(inputs, "clusters")
    best = best_layers(inputs, settings, "mi_bits")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    _check_best(best, methods, inputs)
    labels = ["coarse_names"]
    panels = {}
    for method in methods:
        mean, meta, epoch, n_seeds = matrixplot.seed_mean(runs, method, "correspondence", labels)
        layer = best.loc[method, "layer"]
        panels[method] = (mean[meta["layers"].tolist().index(layer)], meta, epoch, n_seeds)
    vmax = max(float(np.nanmax(p[0])) for p in panels.values())

    k = len(next(iter(panels.values()))[1]["coarse_names"])
    size = max(2.6, 0.35 * k + 1.0)
    fig, axes = style.panels(1, len(methods), (size * len(methods) + 1.0, size + 1.3))
    colours = style.method_palette(methods)
    for ax, method in zip(axes[0], methods, strict=True):
        matrix, meta, epoch, n_seeds = panels[method]
        image = matrixplot.heatmap(ax, matrix, 0.0, vmax)
        _annotate(ax, matrix, vmax)
        names = [str(n) for n in meta["coarse_names"]]
        matrixplot.group_ticks(ax, np.arange(len(names)), names, y=False, separators=False)
        ax.set_yticks(
            range(matrix.shape[0]), [f"cluster {i + 1}" for i in range(matrix.shape[0])], fontsize=7
        )
        ax.set_xlabel("Coarse class")
        ax.set_title(
            f"{method} · {best.loc[method, 'layer']}\nepoch {epoch}, {n_seeds} seed(s)",
            color=colours[method],
            fontsize=8,
        )
    axes[0, 0].set_ylabel("Cluster (matched to a coarse class)")
    bar = fig.colorbar(image, ax=axes, shrink=0.7)
    bar.set_label("Fine classes in cluster\n(count, mean over seeds)")
    fig.suptitle("Clusters vs coarse classes at the best layer (seed 000 Fig. 7)")
    return style.save(fig, stem, *readers.formats(settings))


def _annotate(ax, matrix: np.ndarray, vmax: float) -> None:
    if matrix.shape[0] > 12:
        return  # numbers would be unreadable; the colour carries the count
    for (i, j), value in np.ndenumerate(matrix):
        if value > 0:
            dark = value > 0.55 * vmax
            ax.text(
                j,
                i,
                f"{value:.1f}".rstrip("0").rstrip("."),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if dark else "black",
            )


@FIGURES.register("cluster_histograms")
def cluster_histograms(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 000 §2.6.1: the coarse classes represented in each cluster, at the best layer.

    One panel per method; bar k stacks, per coarse class, the number of fine classes of that
    coarse class in cluster k (mean over seeds), so a pure cluster is one colour and the
    number of colours is the number of coarse classes it mixes. Inputs `table`
    (clustering.tsv) and `clusters:METHOD:SEED`. Settings `methods`.
    """
    runs = readers.run_inputs(inputs, "clusters")
    best = best_layers(inputs, settings, "mi_bits")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    _check_best(best, methods, inputs)
    fig, axes = style.panels(1, len(methods), (3.4 * len(methods) + 1.6, 3.4), sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        mean, meta, epoch, n_seeds = matrixplot.seed_mean(
            runs, method, "correspondence", ["coarse_names"]
        )
        layer = best.loc[method, "layer"]
        counts = mean[meta["layers"].tolist().index(layer)]  # [cluster, coarse class]
        colours = style.coarse_palette(counts.shape[1])
        bottom = np.zeros(counts.shape[0])
        for c, name in enumerate(str(n) for n in meta["coarse_names"]):
            x = np.arange(1, counts.shape[0] + 1)
            ax.bar(x, counts[:, c], bottom=bottom, color=colours[c], label=name, width=0.8)
            bottom += counts[:, c]
        ax.set_xticks(np.arange(1, counts.shape[0] + 1))
        ax.set_xlabel("Cluster")
        ax.set_title(f"{method} · {layer}\nepoch {epoch}, {n_seeds} seed(s)", fontsize=8)
    axes[0, 0].set_ylabel("Fine classes in cluster\n(count, mean over seeds)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, title="Coarse class", loc="outside right upper", frameon=False)
    fig.suptitle("Coarse classes within each cluster at the best layer (seed 000 §2.6.1)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("correspondence_layers")
def correspondence_layers(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 000 Fig. S3: clusters x coarse classes at every layer (rows: methods), final
    epoch, mean counts over seeds; rows of each matrix matched to coarse classes as in Fig. 7.
    Inputs `clusters:METHOD:SEED`. Settings `methods`, `layer_order`.
    """
    runs = readers.run_inputs(inputs, "clusters")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    means = {m: matrixplot.seed_mean(runs, m, "correspondence", ["coarse_names"]) for m in methods}
    layers = readers.layer_order(settings, next(iter(means.values()))[1]["layers"])
    vmax = max(float(np.nanmax(v[0])) for v in means.values())
    k = means[methods[0]][0].shape[-1]
    size = max(1.8, 0.22 * k + 0.8)
    fig, axes = style.panels(
        len(methods), len(layers), (size * len(layers) + 1.2, size * len(methods) + 0.8)
    )
    for row, method in enumerate(methods):
        mean, meta, epoch, n_seeds = means[method]
        order = meta["layers"].tolist()
        for col, layer in enumerate(layers):
            ax = axes[row, col]
            image = matrixplot.heatmap(ax, mean[order.index(layer)], 0.0, vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(layer, fontsize=8)
        axes[row, 0].set_ylabel(f"{method}\nepoch {epoch}, {n_seeds} seed(s)", fontsize=8)
    bar = fig.colorbar(image, ax=axes, shrink=0.6)
    bar.set_label("Fine classes in cluster (count)")
    fig.suptitle("Clusters (rows) vs coarse classes (columns) at every layer (seed 000 Fig. S3)")
    return style.save(fig, stem, *readers.formats(settings))
