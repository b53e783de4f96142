"""One figure style for the whole study: palettes, fixed method colours, labels, saving.

Every figure draws methods in the same colour (`method_palette`), summarises seeds the same way
(`mean_sd_lines`: mean line, a ±1 SD or 95 % CI band (`figures.band`) only where several seeds
exist) and uses one sequential colour map for matrices, so a reader learns the code once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # figures are files; never open a window (headless CI, SLURM nodes)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ssltrace import io  # noqa: E402

# Every registered method gets the same colour in every figure, whichever subset a study runs.
METHOD_ORDER = [
    "simclr",
    "simsiam",
    "vicreg",
    "byol",
    "barlow_twins",
    "moco_v2",
    "supervised",
    "untrained",
]

# Paul Tol's "muted" scheme, ordered so the first few are the most distinct: distinguishable
# under the common colour-vision deficiencies and unlike the method colours, so coarse classes
# never read as methods. Drawn as fills (strips, markers, branches), never as text.
COARSE_COLOURS = [
    "#332288",
    "#CC6677",
    "#117733",
    "#DDCC77",
    "#88CCEE",
    "#882255",
    "#44AA99",
    "#999933",
    "#AA4499",
    "#6699CC",
]

# Perceptually uniform and colour-blind safe; low values light, high values dark.
MATRIX_CMAP = "rocket_r"

# Line styles that separate quantities drawn in one method's colour (loss parts, levels).
LINESTYLES = ["-", "--", ":", "-."]

SD_ALPHA = 0.2


def method_palette(methods: Iterable[str]) -> dict[str, tuple]:
    """Colour of each method: fixed for known methods, name-derived for any other.

    An unknown method's colour comes from a hash of its name, not its position in `methods`,
    so it too is the same in every figure.
    """
    fixed = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER)), strict=True))
    extra = sns.color_palette("dark", 10)
    return {m: fixed.get(m, extra[zlib.crc32(m.encode()) % len(extra)]) for m in methods}


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """Known methods in METHOD_ORDER, then any others alphabetically (legends match figures)."""
    present = set(methods)
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def coarse_palette(n: int) -> list[str]:
    """n colours for coarse classes; beyond Tol's ten, evenly spaced hues (less CB-safe)."""
    if n <= len(COARSE_COLOURS):
        return COARSE_COLOURS[:n]
    return [matplotlib.colors.to_hex(c) for c in sns.color_palette("husl", n)]


def shades(colour, n: int) -> list[tuple]:
    """n shades of one colour from light to dark, for ordered levels such as epochs."""
    rgb = np.array(matplotlib.colors.to_rgb(colour))
    if n == 1:
        return [tuple(rgb)]
    light, dark = rgb + 0.45 * (1 - rgb), rgb * 0.6
    return [tuple(light + t * (dark - light)) for t in np.linspace(0, 1, n)]


def setup() -> None:
    sns.set_theme(context="paper", style="ticks", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 100, "axes.titlesize": "medium", "pdf.fonttype": 42})


def panels(rows: int, columns: int, figsize: tuple[float, float], **share):
    """(fig, axes) in the study style: axes always 2-D, so panel code indexes a single row or
    column like any other grid, and a constrained layout, so titles, colour bars and outside
    legends do not overlap. `share`: sharex / sharey."""
    setup()
    return plt.subplots(
        rows, columns, figsize=figsize, squeeze=False, constrained_layout=True, **share
    )


# What the bands around mean lines show (`figures.band`): ±1 SD over seeds (the seed papers'
# error bars, e.g. seed 001 Fig. 1 over 10 network instances), or the 95 % confidence
# interval of the mean, mean ± t(0.975, n - 1) SD / sqrt(n) (Student's t: few seeds).
BANDS = ("sd", "ci95")
_band = {"kind": "sd"}


def use_band(kind: str) -> None:
    """Set what bands show for the figures drawn next (`figures.draw` sets it per figure)."""
    if kind not in BANDS:
        raise ValueError(f"figures.band must be one of {', '.join(BANDS)}, got {kind!r}")
    _band["kind"] = kind


def band_kind() -> str:
    return _band["kind"]


def band_halfwidth(sd: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Half-width of the band: SD, or t(0.975, n - 1) SD / sqrt(n) for the 95 % CI; 0 where
    a single seed gives no spread."""
    from scipy.stats import t

    sd, count = np.asarray(sd, dtype=float), np.asarray(count, dtype=float)
    several = count > 1
    if _band["kind"] == "sd":
        width = sd
    else:
        dof = np.where(several, count - 1, 1)
        width = t.ppf(0.975, dof) * sd / np.sqrt(np.maximum(count, 1))
    return np.where(several, np.nan_to_num(width), 0.0)


def band_label() -> str:
    return "± 1 SD" if _band["kind"] == "sd" else "95 % CI of the mean (t)"


def summarise(data: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean, SD and number of seeds of `value` per `by` (SD is NaN for a single seed)."""
    stats = data.groupby(list(by), sort=False)["value"].agg(["mean", "std", "count"])
    return stats.reset_index()


def mean_sd_lines(
    ax,
    data: pd.DataFrame,
    x: str,
    colour_of: dict,
    hue: str = "method",
    positions: dict | None = None,
    label_of: dict | None = None,
    linestyle: str = "-",
    marker: str | None = None,
    log: bool = False,
) -> None:
    """One mean line per `hue` value over `x`, with a band (±1 SD, or the 95 % CI with
    `use_band("ci95")`) wherever >1 seed exists.

    `data` holds one row per (hue, seed, x) with a `value` column. `positions` maps categorical
    x values (layers) to plot positions. A series with a single x (an untrained run at epoch 0)
    is drawn as a point with SD error bars instead of a line. `log=True` takes mean and SD of
    log10(value) (geometric mean ×/÷ geometric SD) for quantities drawn on a log axis, where
    mean − SD could fall below zero.
    """
    for key in colour_of:
        rows = data[data[hue] == key]
        if rows.empty:
            continue
        if log:
            rows = rows.assign(value=np.log10(rows["value"]))
        stats = summarise(rows, [x])
        xs = stats[x].map(positions) if positions is not None else stats[x]
        order = np.argsort(xs.to_numpy(), kind="stable")
        xs, mean = xs.to_numpy()[order], stats["mean"].to_numpy()[order]
        count = stats["count"].to_numpy()[order]
        several = count > 1
        colour = colour_of[key]
        label = (label_of or {}).get(key, key)
        half = band_halfwidth(stats["std"].to_numpy()[order], count)
        low, high = mean - half, mean + half
        if log:
            mean, low, high = 10**mean, 10**low, 10**high
        if len(xs) == 1:
            err = [mean - low, high - mean] if several.any() else None
            ax.errorbar(
                xs,
                mean,
                yerr=err,
                color=colour,
                marker=marker or "o",
                label=label,
                linestyle="none",
                capsize=3,
            )
            continue
        ax.plot(xs, mean, color=colour, linestyle=linestyle, marker=marker, label=label)
        if several.any():
            ax.fill_between(xs, low, high, color=colour, alpha=SD_ALPHA, linewidth=0)


def layer_axis(ax, layers: Sequence[str]) -> None:
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_xlabel("Layer (input → output)")


def epoch_axis(ax, label: bool = True) -> None:
    """Whole-numbered epoch ticks (short CI runs would otherwise show 0.5 epochs)."""
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if label:
        ax.set_xlabel("Epoch")


def plain_log_axis(ax) -> None:
    """Log-scaled y with plain numbers (0.3, not 3×10⁻¹); minor ticks labelled only on short
    ranges, where the decades alone would leave too few labels."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.LogFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
    ax.tick_params(axis="y", which="minor", labelsize=6)


def method_legend(fig_or_ax, colour_of: dict, title: str = "Method", **kwargs) -> None:
    """Legend of method colours, placed once per figure."""
    handles = [plt.Line2D([], [], color=c, lw=2, label=m) for m, c in colour_of.items()]
    kwargs.setdefault("frameon", False)
    fig_or_ax.legend(handles=handles, title=title, **kwargs)


def seed_count(data: pd.DataFrame) -> int:
    """The most seeds any method has in `data` (what a legend's seed note reports)."""
    return int(data.groupby("method")["seed"].nunique().max())


def seeds_note(n_seeds: int) -> str:
    if n_seeds <= 1:
        return "1 seed"
    what = "mean ± SD" if _band["kind"] == "sd" else "mean, 95 % CI"
    return f"{what} over {n_seeds} seeds"


def save(fig, stem: Path, formats: Sequence[str], dpi: int) -> list[Path]:
    """Save `fig` as stem.<fmt> for each format, atomically."""
    written = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        with io.atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written
