"""Drawing helpers shared by the matrix figures (error matrices, confusions, RDMs).

Also the per-run matrix loading they share: each run's matrices at one epoch, averaged over the
seeds of a method after checking the seeds agree on axis labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssltrace.figures import readers, style


def seed_mean(
    runs: dict[tuple[str, int], Path], method: str, key: str, labels: Sequence[str]
) -> tuple[np.ndarray, dict, int, int]:
    """Mean over a method's seeds of array `key` [E, L, ...] at each run's last epoch.

    Returns (mean [L, ...], the first run's `labels` arrays plus `epochs` and `layers`, the
    last epoch, the number of seeds).
    """
    means, meta = seed_means(runs, method, key, labels, None)
    epoch = max(means)
    return means[epoch][0], meta, epoch, means[epoch][1]


def seed_means(
    runs: dict[tuple[str, int], Path],
    method: str,
    key: str,
    labels: Sequence[str],
    epochs: Sequence[int] | None,
) -> tuple[dict[int, tuple[np.ndarray, int]], dict]:
    """`{epoch: (mean over seeds of key[epoch] [L, ...], n_seeds)}` for `epochs` present.

    `epochs=None` takes each run's last epoch. Each run file is read once; seeds must agree
    on `layers` and the `labels` arrays (same probe set), else the file is named.
    """
    stacks: dict[int, list[np.ndarray]] = {}
    meta = None
    for (m, _seed), path in runs.items():
        if m != method:
            continue
        arrays = readers.load_arrays(path, [key, "epochs", "layers", *labels])
        if meta is None:
            meta = arrays
        for name in ("layers", *labels):
            if not np.array_equal(arrays[name], meta[name]):
                raise ValueError(f"{path}: {name!r} differs from the other seeds of {method}")
        have = arrays["epochs"].tolist()
        for epoch in [max(have)] if epochs is None else epochs:
            if epoch in have:
                value = arrays[key][have.index(epoch)].astype(np.float64)
                stacks.setdefault(int(epoch), []).append(value)
    if meta is None:
        raise ValueError(f"no per-run inputs for method {method!r}")
    means = {}
    for epoch, stack in stacks.items():
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
            means[epoch] = (np.nanmean(np.stack(stack), axis=0), len(stack))
    return means, meta


def heatmap(ax, matrix: np.ndarray, vmin: float, vmax: float, cmap: str = style.MATRIX_CMAP):
    """Matrix as an image, NaN cells (masked diagonals, undefined entries) in light grey."""
    import matplotlib

    colours = matplotlib.colormaps[_cmap_name(cmap)].with_extremes(bad="0.9")
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        cmap=colours,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )
    for side in ax.spines.values():
        side.set_visible(True)
        side.set_linewidth(0.5)
    return image


def _cmap_name(cmap: str) -> str:
    import matplotlib
    import seaborn  # noqa: F401  registers rocket, mako, ... with matplotlib

    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown colour map {cmap!r}")
    return cmap


def group_ticks(
    ax,
    groups: np.ndarray,
    names: Sequence[str],
    x: bool = True,
    y: bool = True,
    separators: bool = True,
) -> None:
    """Group names at the centres of their rows/columns, with a strip in each group's colour.

    `groups` [n] is the group index (into `names`) of each row/column in display order, in
    contiguous runs; -1 marks items in no group. Strips carry the colour so the names can stay
    black and legible whatever the colour; thin grey lines separate the groups.
    """
    from matplotlib.patches import Rectangle
    from matplotlib.transforms import blended_transform_factory

    groups = np.asarray(groups)
    colours = style.coarse_palette(len(names))
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)]
    centres = (starts + ends - 1) / 2
    labels = [str(names[g]) if g >= 0 else "other" for g in groups[starts]]
    fontsize = 7 if len(starts) <= 10 else 5
    strip = (-0.05, 0.035)  # offset and width in axes fractions, outside the image
    for show, axis, lines, transform in (
        (x, ax.xaxis, ax.axvline, blended_transform_factory(ax.transData, ax.transAxes)),
        (y, ax.yaxis, ax.axhline, blended_transform_factory(ax.transAxes, ax.transData)),
    ):
        if separators:
            for boundary in starts[1:]:
                lines(boundary - 0.5, color="0.55", lw=0.7)
        if not show:
            axis.set_ticks([])
            continue
        axis.set_ticks(centres, labels, fontsize=fontsize)
        for start, end, g in zip(starts, ends, groups[starts], strict=True):
            span = (start - 0.5, end - start)
            xy, size = (
                ((span[0], strip[0]), (span[1], strip[1]))
                if axis is ax.xaxis
                else ((strip[0], span[0]), (strip[1], span[1]))
            )
            ax.add_patch(
                Rectangle(
                    xy,
                    *size,
                    transform=transform,
                    clip_on=False,
                    facecolor=colours[g] if g >= 0 else "0.8",
                    edgecolor="white",
                    linewidth=0.5,
                )
            )
    if x:
        ax.tick_params(axis="x", rotation=90, length=0, pad=9)
    if y:
        ax.tick_params(axis="y", length=0, pad=9)


def shared_limits(matrices: Sequence[np.ndarray], robust: bool = False) -> tuple[float, float]:
    """One colour range for panels that share a colour bar (2nd-98th percentile if robust)."""
    values = np.concatenate([m[np.isfinite(m)].ravel() for m in matrices if m is not None])
    if values.size == 0:
        return 0.0, 1.0
    if robust:
        lo, hi = np.percentile(values, [2, 98])
    else:
        lo, hi = values.min(), values.max()
    return float(lo), float(hi if hi > lo else lo + 1e-9)


def offdiagonal(matrix: np.ndarray) -> np.ndarray:
    """Copy of a square matrix (or a stack of them) with NaN on the diagonal."""
    out = np.array(matrix, dtype=np.float64)
    idx = np.arange(out.shape[-1])
    out[..., idx, idx] = np.nan
    return out
