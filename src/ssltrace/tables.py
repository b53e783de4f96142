"""Tidy metric tables: one row per (method, seed, epoch, layer, probe, metric) and a value."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ssltrace import io

COLUMNS = ["method", "seed", "epoch", "layer", "probe", "metric", "value"]


def frame(rows: Iterable[dict]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows), columns=COLUMNS)
    return table.astype({"seed": "int64", "epoch": "int64", "value": "float64"})


def read(path: str | Path) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not a tidy metric table: missing columns {missing}")
    return table


def concat(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Stack per-run tables into one study table, sorted so reruns give identical files."""
    table = pd.concat([read(p) for p in paths], ignore_index=True) if paths else frame([])
    table = table.sort_values(COLUMNS[:-1], kind="stable").reset_index(drop=True)
    io.save_table(out, table)
    return table
