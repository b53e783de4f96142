"""One figure style for the whole study: palette, fixed method colours, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (headless CI, SLURM nodes)

import matplotlib.pyplot as plt  # noqa: E402
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


def method_palette(methods: Sequence[str]) -> dict[str, tuple]:
    colours = sns.color_palette("colorblind", n_colors=len(METHOD_ORDER))
    fixed = dict(zip(METHOD_ORDER, colours, strict=False))
    extra = sns.color_palette("dark", n_colors=max(1, len(methods)))
    return {m: fixed.get(m, extra[i]) for i, m in enumerate(methods)}


def setup() -> None:
    sns.set_theme(context="paper", style="ticks", font_scale=1.1)


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
