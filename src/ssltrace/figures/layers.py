"""Metric-vs-layer figures: mean ± SD across seeds per method at the final epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ssltrace import tables
from ssltrace.figures import style

LABELS = {
    "fewshot_error": "Mean pairwise few-shot error (fraction)",
    "mi_bits": "Mutual information with coarse classes (bits)",
}


def final_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last analysed epoch (untrained runs have only epoch 0)."""
    last = table.groupby(["method", "seed"])["epoch"].transform("max")
    return table[table["epoch"] == last]


def metric_vs_layer(
    table_path: Path, metric: str, stem: Path, formats: Sequence[str], dpi: int, title: str
) -> list[Path]:
    style.setup()
    table = tables.read(table_path)
    data = final_epoch(table[table["metric"] == metric])
    if data.empty:
        raise ValueError(f"{table_path} has no rows for metric {metric!r}")
    layer_order = list(dict.fromkeys(data["layer"]))
    methods = [m for m in style.METHOD_ORDER if m in set(data["method"])] + sorted(
        set(data["method"]) - set(style.METHOD_ORDER)
    )
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    palette = style.method_palette(methods)
    for method in methods:
        rows = data[data["method"] == method]
        stats = rows.groupby("layer")["value"].agg(["mean", "std", "count"]).reindex(layer_order)
        x = range(len(layer_order))
        ax.plot(x, stats["mean"], marker="o", color=palette[method], label=method)
        if (stats["count"] > 1).any():
            sd = stats["std"].fillna(0)
            ax.fill_between(
                x,
                stats["mean"] - sd,
                stats["mean"] + sd,
                color=palette[method],
                alpha=0.2,
                linewidth=0,
            )
    ax.set_xticks(range(len(layer_order)), layer_order, rotation=30, ha="right")
    ax.set_xlabel("Layer (input → output)")
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(title)
    ax.legend(title="Method (mean ± SD over seeds)", frameon=False, fontsize=8)
    return style.save(fig, stem, formats, dpi)
