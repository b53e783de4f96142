"""Seed 004 Fig. 3 (middle): compression of I(input; representation) along training (MINE)."""

from __future__ import annotations

from pathlib import Path

import seaborn as sns

from ssltrace.figures import FIGURES, readers, style


@FIGURES.register("compression_vs_epoch")
def compression_vs_epoch(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """MINE estimate of I(X; Z) along training: the deep layer per method (left) and every
    layer at each run's first and last analysed epoch (right).

    Input `table` (compression.tsv, metric `mi`: the mean over MINE initialisations).
    Settings `deep_layer`, `layer_order`.
    """
    data, layer = readers.deep_layer_rows(inputs, ["mi"], settings)
    every = readers.read_metrics(inputs, ["mi"])
    colours = style.method_palette(style.ordered_methods(data["method"]))
    fig, axes = style.panels(1, 2, (10.5, 3.4))
    left, right = axes[0]
    style.mean_sd_lines(left, data, "epoch", colours, marker=".")
    style.epoch_axis(left)
    left.set_ylabel("I(X; Z), nats (MINE)")
    left.set_title(f"{layer} along training")
    order = readers.layer_order(settings, every["layer"])
    positions = {name: i for i, name in enumerate(order)}
    for when, linestyle in (("first", ":"), ("last", "-")):
        pick = every.groupby(["method", "seed"])["epoch"].transform(when)
        rows = every[every["epoch"] == pick]
        style.mean_sd_lines(
            right, rows, "layer", colours, positions=positions, linestyle=linestyle, marker="."
        )
    style.layer_axis(right, order)
    right.set_title("per layer: first epoch (dotted), last epoch (solid)")
    for ax in axes[0]:
        sns.despine(ax=ax)
    note = style.seeds_note(style.seed_count(data))
    style.method_legend(fig, colours, title=f"Method\n({note})", loc="outside right upper")
    fig.suptitle("Mutual information between input and representation (seed 004, Fig. 3 middle)")
    return style.save(fig, stem, *readers.formats(settings))
