"""Metric-vs-layer figures of seed 000: mean ± SD across seeds per method at the final epoch."""

from __future__ import annotations

from pathlib import Path

import seaborn as sns

from ssltrace.figures import FIGURES, readers, style
from ssltrace.figures.readers import final_epoch  # noqa: F401  (kept for older callers)

LABELS = {
    "fewshot_error": "Mean pairwise few-shot error (fraction)",
    "mi_bits": "MI of clusters with coarse classes (bits)",
    "human_spearman_full": "Spearman ρ, model vs human confusion\n(whole matrix, unitless)",
    "human_spearman_offdiag": "Spearman ρ, model vs human confusion\n(off-diagonal, unitless)",
}


def _layer_figure(name: str, metrics: str | list[str], title: str, zero_line: bool = False):
    """Register the `metric_vs_layer` figure of one metric (or several, side by side) as
    `name`: the figures differ only in metrics and title."""
    metrics = [metrics] if isinstance(metrics, str) else metrics

    def draw(inputs: dict, stem: Path, settings: dict) -> list[Path]:
        return metric_vs_layer(inputs, metrics, stem, settings, title, zero_line)

    draw.__name__ = draw.__qualname__ = name
    draw.__doc__ = title
    return FIGURES.register(name)(draw)


# Seed 000 Figs. 5, 8 and 10. A zero line for the correlation, whose sign matters.
fewshot_error_vs_layer = _layer_figure(
    "fewshot_error_vs_layer",
    "fewshot_error",
    "Few-shot error vs layer, final epoch (seed 000 Fig. 5)",
)
mi_vs_layer = _layer_figure(
    "mi_vs_layer",
    "mi_bits",
    "Clusters vs coarse classes by layer, final epoch (seed 000 Fig. 8)",
)
# The paper's measure (§2.6.2) correlates the whole matrices; the off-diagonal one beside it
# leaves out the accuracies, which dominate the ranks of a whole confusion matrix.
spearman_vs_layer = _layer_figure(
    "spearman_vs_layer",
    ["human_spearman_full", "human_spearman_offdiag"],
    "Model–human confusion similarity vs layer, final epoch (seed 000 Fig. 10)",
    zero_line=True,
)


def metric_vs_layer(
    inputs: dict,
    metrics: list[str],
    stem: Path,
    settings: dict,
    title: str,
    zero_line: bool = False,
) -> list[Path]:
    """Each metric in its own panel: mean ± SD over seeds per method and layer."""
    data = final_epoch(readers.read_metrics(inputs, metrics))
    layers = readers.layer_order(settings, data["layer"])
    colours = style.method_palette(style.ordered_methods(data["method"]))
    positions = {layer: i for i, layer in enumerate(layers)}
    fig, axes = style.panels(1, len(metrics), (5.6 * len(metrics) + 1.0, 4.0), sharey=True)
    for ax, metric in zip(axes[0], metrics, strict=True):
        rows = data[data["metric"] == metric]
        style.mean_sd_lines(ax, rows, "layer", colours, positions=positions, marker="o")
        if zero_line:
            ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        style.layer_axis(ax, layers)
        ax.set_ylabel(LABELS.get(metric, metric))
        sns.despine(ax=ax)
    fig.suptitle(title)
    axes[0, -1].legend(
        title=f"Method ({style.seeds_note(style.seed_count(data))})",
        frameon=False,
        fontsize=8,
        bbox_to_anchor=(1.02, 1),
        loc="upper left",
    )
    return style.save(fig, stem, *readers.formats(settings))
