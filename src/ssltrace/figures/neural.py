"""Neural predictivity and behavioural consistency figures of seed 003 (Figs. 2b-c, 4d;
Extended Data Figs. 1, 2, 3, 8, 11), from the `predictivity` and `behaviour` study tables and
the study's t-test matrix files (`tables/{predictivity,behaviour}_ttests.npz`,
`ssltrace.analysis.ttests`).

A region is a table `probe` (`dataset:region`, e.g. `simulated:V1-like`: simulated data carry
their dataset's name everywhere). The score shown is the readout named by the first entry of
`predictivity.readouts`, ceiled (r / sqrt(split-half reliability), the seed) unless
`predictivity.ceiling` is false, then raw Pearson r.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ssltrace.figures import FIGURES, readers, style
from ssltrace.figures.readers import final_epoch


def score_metric(settings: dict) -> tuple[str, str, str]:
    """(score metric, its SE metric, axis label) of the readout the figures show."""
    readouts = settings.get("readouts") or ["factorised_map"]
    readout = readouts[0] if isinstance(readouts, list) else str(readouts)
    if settings.get("ceiling", True):
        return f"{readout}_ceiled", f"{readout}_se", f"Noise-ceiled predictivity ({readout})"
    return f"{readout}_r", f"{readout}_r_se", f"Predictivity, Pearson r ({readout})"


def read_scores(inputs: dict, settings: dict) -> tuple[pd.DataFrame, str, str]:
    metric, se, label = score_metric(settings)
    return readers.read_metrics(inputs, [metric, se]), metric, label


def best_layers(data: pd.DataFrame, metric: str, order: list[str]) -> pd.DataFrame:
    """Per (method, probe): the layer with the highest seed-mean score (ties: the earlier)."""
    means = (
        data[data["metric"] == metric]
        .groupby(["method", "probe", "layer"], sort=False)["value"]
        .mean()
        .reset_index()
    )
    means["position"] = means["layer"].map({layer: i for i, layer in enumerate(order)})
    means = means.sort_values(["method", "probe", "position"], kind="stable")
    best = means.loc[means.groupby(["method", "probe"], sort=False)["value"].idxmax()]
    return best[["method", "probe", "layer"]].reset_index(drop=True)


def _regions(data: pd.DataFrame) -> list[str]:
    return sorted(data["probe"].unique())


def _methods(data: pd.DataFrame) -> list[str]:
    return style.ordered_methods(data["method"].unique())


def _legend(ax, colours: dict, data: pd.DataFrame) -> None:
    style.method_legend(
        ax,
        colours,
        title=f"Method ({style.seeds_note(style.seed_count(data))})",
        fontsize=8,
        bbox_to_anchor=(1.02, 1),
        loc="upper left",
    )


# ----------------------------------------------------------------------------- Fig. 2b
@FIGURES.register("neural_best_layer")
def neural_best_layer(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 2b: each method's best-layer predictivity per region, final epoch; bars
    are means over seeds, black bars the bootstrap SE over neuroids (mean over seeds), dots
    the single seeds."""
    table, metric, label = read_scores(inputs, settings)
    data = final_epoch(table)
    order = readers.layer_order(settings, data["layer"])
    best = best_layers(data, metric, order)
    picked = data.merge(best, on=["method", "probe", "layer"])
    regions, methods = _regions(picked), _methods(picked)
    colours = style.method_palette(methods)
    fig, axes = style.panels(1, len(regions), (1.2 + 0.5 * len(methods) * len(regions), 3.6))
    for ax, region in zip(axes[0], regions, strict=True):
        rows = picked[picked["probe"] == region]
        for i, method in enumerate(methods):
            score = rows[(rows["method"] == method) & (rows["metric"] == metric)]["value"]
            se = rows[(rows["method"] == method) & (rows["metric"] != metric)]["value"]
            if score.empty:
                continue
            ax.bar(i, score.mean(), color=colours[method], width=0.8)
            ax.errorbar(i, score.mean(), yerr=se.mean(), color="k", capsize=3, lw=1)
            ax.plot(np.full(len(score), i), score, "o", ms=3, color="0.25", zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_title(region)
        ax.axhline(0, color="0.6", lw=0.8)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel(f"{label}\nat the best layer")
    fig.suptitle("Best-layer neural predictivity per region, final epoch (seed 003 Fig. 2b)")
    return style.save(fig, stem, *readers.formats(settings))


# ----------------------------------------------------------------------------- Fig. 2c / ED 2
@FIGURES.register("neural_across_layers")
def neural_across_layers(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 2c and Extended Data Fig. 2: predictivity of every layer per region at
    the final epoch, mean ± SD over seeds per method."""
    table, metric, label = read_scores(inputs, settings)
    data = final_epoch(table[table["metric"] == metric])
    layers = readers.layer_order(settings, data["layer"])
    regions = _regions(data)
    colours = style.method_palette(_methods(data))
    positions = {layer: i for i, layer in enumerate(layers)}
    fig, axes = style.panels(1, len(regions), (4.4 * len(regions) + 1.2, 3.8), sharey=True)
    for ax, region in zip(axes[0], regions, strict=True):
        rows = data[data["probe"] == region]
        style.mean_sd_lines(ax, rows, "layer", colours, positions=positions, marker="o")
        ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        style.layer_axis(ax, layers)
        ax.set_title(region)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel(label)
    _legend(axes[0, -1], colours, data)
    fig.suptitle("Neural predictivity across layers, final epoch (seed 003 Fig. 2c, ED Fig. 2)")
    return style.save(fig, stem, *readers.formats(settings))


# ----------------------------------------------------------------------------- ED 3
def best_layer_per_seed(data: pd.DataFrame, metric: str, order: list[str]) -> pd.DataFrame:
    """Per (method, seed, probe): the position (0 = first layer) of the best layer."""
    rows = data[data["metric"] == metric].copy()
    rows["position"] = rows["layer"].map({layer: i for i, layer in enumerate(order)})
    rows = rows.sort_values(["method", "seed", "probe", "position"], kind="stable")
    best = rows.loc[rows.groupby(["method", "seed", "probe"], sort=False)["value"].idxmax()]
    return best[["method", "seed", "probe", "layer", "position"]].reset_index(drop=True)


@FIGURES.register("neural_best_layer_index")
def neural_best_layer_index(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Fig. 3: which layer predicts each region best, final epoch;
    mean ± SD over seeds of the best layer's position, one marker per method."""
    table, metric, label = read_scores(inputs, settings)
    data = final_epoch(table)
    layers = readers.layer_order(settings, data["layer"])
    best = best_layer_per_seed(data, metric, layers)
    regions, methods = _regions(best), _methods(best)
    colours = style.method_palette(methods)
    fig, axes = style.panels(1, 1, (1.6 + 1.2 * len(regions), 3.8))
    ax = axes[0, 0]
    offsets = np.linspace(-0.3, 0.3, len(methods)) if len(methods) > 1 else [0.0]
    for offset, method in zip(offsets, methods, strict=True):
        rows = best[best["method"] == method]
        stats = rows.groupby("probe")["position"].agg(["mean", "std"]).reindex(regions)
        xs = np.arange(len(regions)) + offset
        ax.errorbar(
            xs,
            stats["mean"],
            yerr=stats["std"].fillna(0),
            fmt="o",
            color=colours[method],
            capsize=3,
            label=method,
        )
    ax.set_xticks(range(len(regions)), regions, rotation=20, ha="right")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_ylim(-0.5, len(layers) - 0.5)
    ax.set_ylabel("Best-predicting layer (input → output)")
    ax.set_xlabel("Region")
    sns.despine(ax=ax)
    _legend(ax, colours, best)
    fig.suptitle(f"Best layer per region by {label[0].lower()}{label[1:]} (seed 003 ED Fig. 3)")
    return style.save(fig, stem, *readers.formats(settings))


# ----------------------------------------------------------------------------- ED 11
def best_over_layers(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows (method, seed, epoch, probe, value): per run, epoch and region the best layer's
    score (the maximum over layers at that epoch)."""
    rows = table[table["metric"] == metric]
    best = rows.groupby(["method", "seed", "epoch", "probe"], sort=False)["value"].max()
    return best.reset_index()


@FIGURES.register("neural_over_epochs")
def neural_over_epochs(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Fig. 11: each region's best-layer predictivity (the maximum over
    layers at each epoch) along training, mean ± SD over seeds per method."""
    table, metric, label = read_scores(inputs, settings)
    best = best_over_layers(table, metric)
    regions = _regions(best)
    colours = style.method_palette(_methods(best))
    fig, axes = style.panels(1, len(regions), (4.2 * len(regions) + 1.2, 3.6), sharey=True)
    for ax, region in zip(axes[0], regions, strict=True):
        style.mean_sd_lines(ax, best[best["probe"] == region], "epoch", colours, marker="o")
        style.epoch_axis(ax)
        ax.set_title(region)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel(f"{label}\n(best layer at each epoch)")
    _legend(axes[0, -1], colours, best)
    fig.suptitle("Neural predictivity over training (seed 003 ED Fig. 11)")
    return style.save(fig, stem, *readers.formats(settings))


# ----------------------------------------------------------------------------- Fig. 4d
CONSISTENCY = "behaviour_consistency"


@FIGURES.register("behaviour_consistency")
def behaviour_consistency(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Fig. 4d: behavioural consistency (r / sqrt(human reliability)) per method at
    the final epoch, one panel per behaviour set; bars are seed means, dots single seeds."""
    data = final_epoch(readers.read_metrics(inputs, [CONSISTENCY]))
    data = data[data["layer"] == _behaviour_layer(data, settings)]
    sets, methods = _regions(data), _methods(data)
    colours = style.method_palette(methods)
    fig, axes = style.panels(1, len(sets), (1.2 + 0.5 * len(methods) * len(sets), 3.6))
    for ax, name in zip(axes[0], sets, strict=True):
        rows = data[data["probe"] == name]
        for i, method in enumerate(methods):
            values = rows[rows["method"] == method]["value"]
            if values.empty:
                continue
            sd = values.std() if len(values) > 1 else 0.0
            ax.bar(i, values.mean(), color=colours[method], width=0.8)
            ax.errorbar(i, values.mean(), yerr=sd, color="k", capsize=3, lw=1)
            ax.plot(np.full(len(values), i), values, "o", ms=3, color="0.25", zorder=3)
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_title(name)
        ax.axhline(0, color="0.6", lw=0.8)
        sns.despine(ax=ax)
    axes[0, 0].set_ylabel("Behavioural consistency\n(r / √human reliability)")
    fig.suptitle("Behavioural consistency with humans, final epoch (seed 003 Fig. 4d)")
    return style.save(fig, stem, *readers.formats(settings))


def _behaviour_layer(data: pd.DataFrame, settings: dict) -> str:
    """`behaviour.layers[0]` when set, else the one layer the analysis scored (penultimate)."""
    chosen = settings.get("behaviour_layers")
    layers = sorted(data["layer"].unique())
    if chosen:
        if chosen[0] not in layers:
            raise ValueError(f"behaviour.layers: {chosen[0]!r} not in the table ({layers})")
        return chosen[0]
    return readers.layer_order(settings, layers)[-1]


# ----------------------------------------------------------------------------- ED 1 and ED 8
def read_ttests(inputs: dict, axes: list[str]) -> dict[str, np.ndarray]:
    """`t`, `p`, `methods` and the `axes` labels of the study's t-test matrix file (input
    `ttests`, written by `ssltrace ttests`)."""
    path = readers.input_path(inputs, "ttests")
    return readers.load_arrays(path, ["t", "p", "methods", *axes])


def _legend_order(found: dict) -> tuple[list[str], np.ndarray]:
    """Methods in legend order and their positions in the file's (sorted) method axis."""
    names = found["methods"].astype(str).tolist()
    order = style.ordered_methods(names)
    return order, np.array([names.index(m) for m in order])


def _cell(found: dict, key: str, index: tuple, pick: np.ndarray) -> np.ndarray:
    return found[key][index][np.ix_(pick, pick)]


def _index(found: dict, key: str, value: str) -> int:
    values = found[key].astype(str).tolist()
    if value not in values:
        raise ValueError(f"t-test file has no {key[:-1]} {value!r}; it has {values}")
    return values.index(value)


def _pvalue_panel(ax, names: list[str], p: np.ndarray, t: np.ndarray, title: str):
    """-log10 p as colour, p and the sign of t written in each cell."""
    from ssltrace.figures.matrixplot import heatmap

    with np.errstate(divide="ignore", invalid="ignore"):
        strength = -np.log10(p)
    top = max(3.0, float(np.nanmax(strength, initial=0.0)))
    image = heatmap(ax, strength, 0.0, top, "mako_r")
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(p[i, j]):
                sign = "+" if t[i, j] > 0 else "−"
                colour = "white" if strength[i, j] > top / 2 else "black"  # legible on dark
                ax.text(
                    j,
                    i,
                    f"{sign}\n{p[i, j]:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color=colour,
                )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title(title)
    return image


@FIGURES.register("neural_ttests")
def neural_ttests(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Fig. 1: paired two-tailed t-tests between methods over the
    neuroids of each region (each method at its best layer, final epoch, neuroid scores
    averaged over seeds), read from the study's `predictivity_ttests` file
    (`ssltrace.analysis.ttests.neural_ttests`); cell (i, j): p, with + when method i exceeds j.
    """
    found = read_ttests(inputs, ["readouts", "kinds", "regions"])
    metric, _, _ = score_metric(settings)
    readout, kind = metric.rsplit("_", 1)
    r = _index(found, "readouts", readout)
    k = _index(found, "kinds", "ceiled" if kind == "ceiled" else "raw")
    methods, pick = _legend_order(found)
    regions = found["regions"].astype(str).tolist()
    size = 1.0 + 0.55 * len(methods)
    fig, axes = style.panels(1, len(regions), (size * len(regions) + 1.0, size))
    for g, (ax, region) in enumerate(zip(axes[0], regions, strict=True)):
        t, p = (_cell(found, key, (r, k, g), pick) for key in ("t", "p"))
        image = _pvalue_panel(ax, methods, p, t, region)
    fig.colorbar(image, ax=axes[0, -1], label="−log10 p", shrink=0.8)
    fig.suptitle("Paired t-tests over neuroids between methods (seed 003 ED Fig. 1)")
    return style.save(fig, stem, *readers.formats(settings))


@FIGURES.register("behaviour_ttests")
def behaviour_ttests(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 003 Extended Data Fig. 8: unpaired two-tailed t-tests between methods over seeds
    of the behavioural consistency (final epoch) at the behaviour layer, read from the
    study's `behaviour_ttests` file (`ssltrace.analysis.ttests.behaviour_ttests`); a method
    with one seed has no test (grey)."""
    found = read_ttests(inputs, ["layers", "probes"])
    layers = found["layers"].astype(str).tolist()
    rows = pd.DataFrame({"layer": layers})
    layer = layers.index(_behaviour_layer(rows, settings))
    methods, pick = _legend_order(found)
    sets = found["probes"].astype(str).tolist()
    size = 1.0 + 0.55 * len(methods)
    fig, axes = style.panels(1, len(sets), (size * len(sets) + 1.0, size))
    for b, (ax, name) in enumerate(zip(axes[0], sets, strict=True)):
        t, p = (_cell(found, key, (b, layer), pick) for key in ("t", "p"))
        image = _pvalue_panel(ax, methods, p, t, name)
    fig.colorbar(image, ax=axes[0, -1], label="−log10 p", shrink=0.8)
    fig.suptitle("Unpaired t-tests over seeds, behavioural consistency (seed 003 ED Fig. 8)")
    return style.save(fig, stem, *readers.formats(settings))
