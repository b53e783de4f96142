"""Seed 004 Figs. 4, 11 (bottom) and 12: semantic versus random targets.

One row per method and target network (Fig. 12: ResNet-18 and ViT targets; Fig. 11 bottom:
methods side by side): linear test accuracy against the targets' randomness at selected epochs
of the deep layer (left), at every read-out layer at the last epoch (middle), and the
semantic / random ratios of the clustering measures along training (right, log scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns

from ssltrace.figures import FIGURES, readers, style

KEYS = ["accuracy", "ratios", "epochs", "layers", "networks", "measures", "randomness"]
MEASURE_NAMES = {
    "ncc_test": "NCC accuracy",
    "cdnv": "CDNV",
    "within_var": "within-class variance",
    "between_dist": "squared distance between means",
}


def _seed_stack(runs: dict, method: str) -> tuple[dict, int]:
    """The method's matrix files stacked over seeds (they must share epochs, layers and target
    sets), and the number of seeds."""
    files = [readers.load_arrays(p, KEYS) for (m, _s), p in runs.items() if m == method]
    first = files[0]
    for found in files[1:]:
        for key in ("epochs", "layers", "networks", "randomness"):
            nan = key == "randomness"  # NaN pads networks with fewer target sets
            if not np.array_equal(found[key], first[key], equal_nan=nan):
                raise ValueError(f"random_targets of {method}: {key!r} differ between seeds")
    stacked = {k: np.stack([f[k] for f in files]) for k in ("accuracy", "ratios")}
    return {**first, **stacked}, len(files)


def _mean_sd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD over seeds (axis 0); SD 0 for a single seed."""
    with np.errstate(invalid="ignore"):
        sd = (
            np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1:])
        )
    return np.nanmean(values, axis=0), np.nan_to_num(sd)


def _line(ax, x, values, colour, label, marker="."):
    mean, sd = _mean_sd(values)
    keep = np.isfinite(x) & np.isfinite(mean)
    order = np.argsort(x[keep])
    xs, ms, ss = x[keep][order], mean[keep][order], sd[keep][order]
    ax.plot(xs, ms, color=colour, marker=marker, label=label)
    if values.shape[0] > 1:
        ax.fill_between(xs, ms - ss, ms + ss, color=colour, alpha=style.SD_ALPHA, linewidth=0)


@FIGURES.register("random_targets")
def random_targets(inputs: dict, stem: Path, settings: dict) -> list[Path]:
    """Seed 004 Fig. 4 (and 11 bottom, 12) per method x target network.

    Inputs `scores:METHOD:SEED` (random_targets `_scores.npz`). Settings `methods`, `epochs`
    (the lines of the left panel), `deep_layer`.
    """
    runs = readers.run_inputs(inputs, "scores")
    methods = readers.chosen_methods(settings, (m for m, _ in runs))
    data = {m: _seed_stack(runs, m) for m in methods}
    first = next(iter(data.values()))[0]
    networks = [str(n) for n in first["networks"]]
    panels = [(m, ni, net) for m in methods for ni, net in enumerate(networks)]
    fig, axes = style.panels(len(panels), 3, (13.0, 2.9 * len(panels) + 0.6))
    for r, (method, ni, net) in enumerate(panels):
        found, n_seeds = data[method]
        colour = style.method_palette(methods)[method]
        order = readers.layer_order(settings, [str(x) for x in found["layers"]])
        deep = readers.early_deep(settings, order)[1]
        li = [str(x) for x in found["layers"]].index(deep)
        x = found["randomness"][ni]
        epochs = found["epochs"].tolist()
        picked = readers.chosen_epochs(settings, epochs)
        for shade, epoch in zip(style.shades(colour, len(picked)), picked, strict=True):
            e = epochs.index(epoch)
            _line(axes[r, 0], x, found["accuracy"][:, e, li, ni], shade, f"epoch {epoch}")
        for shade, layer in zip(style.shades(colour, len(order)), order, strict=True):
            lj = [str(y) for y in found["layers"]].index(layer)
            _line(axes[r, 1], x, found["accuracy"][:, -1, lj, ni], shade, layer)
        for k, measure in enumerate(str(m) for m in found["measures"]):
            values = found["ratios"][:, :, li, ni, k]
            _line(axes[r, 2], np.array(epochs, float), values, f"C{k}", MEASURE_NAMES[measure])
        _label(axes[r], method, net, deep, epochs[-1], n_seeds)
    fig.suptitle("Semantic versus random targets (seed 004, Figs. 4, 11 bottom, 12)")
    return style.save(fig, stem, *readers.formats(settings))


def _label(row, method, net, deep, last, n_seeds) -> None:
    left, middle, right = row
    note = style.seeds_note(n_seeds)
    left.set_title(f"{method}, {net} targets: {deep} by epoch ({note})", fontsize=8)
    middle.set_title(f"{method}, {net} targets: layers at epoch {last}", fontsize=8)
    right.set_title(f"{method}, {net} targets: semantic / random, {deep}", fontsize=8)
    for ax in (left, middle):
        ax.set_xlabel("Randomness (0 = trained target network, 1 = initialisation)")
        ax.set_ylabel("Linear test accuracy")
        ax.legend(fontsize=6, frameon=False)
    style.plain_log_axis(right)
    right.axhline(1.0, color="0.6", lw=0.8)
    style.epoch_axis(right)
    right.set_ylabel("Ratio semantic / random")
    right.legend(fontsize=6, frameon=False)
    for ax in row:
        sns.despine(ax=ax)
