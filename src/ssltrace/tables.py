"""Tidy metric tables: one row per (method, seed, epoch, layer, probe, metric) and a value;
and the training logs. Both are plain TSV (pandas, R, a spreadsheet read them as they are),
written with their sha256 beside them and verified when read (`ssltrace.io.read_table`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ssltrace import io

COLUMNS = ["method", "seed", "epoch", "layer", "probe", "metric", "value"]
KEYS = COLUMNS[:-1]
# One row per trained epoch (`ssltrace.training`); untrained runs have the header alone.
TRAIN_LOG_COLUMNS = (
    "epoch",
    "loss",
    "invariance",
    "regularisation",
    "lr",
    "seconds",
    "images_per_s",
)


def frame(rows: Iterable[dict]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows), columns=COLUMNS)
    return table.astype({"seed": "int64", "epoch": "int64", "value": "float64"})


def read(path: str | Path, remove: bool = True) -> pd.DataFrame:
    """A tidy metric table, verified (`io.read_table`): a damaged one is removed (unless
    `remove` is false) so that the job that writes it runs again."""
    return io.read_table(path, COLUMNS, integers=("seed", "epoch"), keys=KEYS, remove=remove)


def read_train_log(
    path: str | Path, columns: Sequence[str] = TRAIN_LOG_COLUMNS, remove: bool = True
) -> pd.DataFrame:
    """A run's train_log.tsv, verified: the `columns` present, one row per epoch, in order."""
    path = Path(path)
    columns = ["epoch", *(c for c in columns if c != "epoch")]
    log = io.read_table(path, columns, integers=["epoch"], keys=["epoch"], remove=remove)
    epochs = log["epoch"].to_numpy()
    if len(epochs) and (epochs[0] < 1 or (epochs[1:] <= epochs[:-1]).any()):
        raise io.damaged(
            path, "its epochs are not increasing from 1", remove=remove and _ours(path)
        )
    return log


def _ours(path: Path) -> bool:
    return io.digest_path(path).exists()


def concat(paths: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Stack per-run tables into one study table, sorted so reruns give identical files."""
    table = pd.concat([read(p) for p in paths], ignore_index=True) if paths else frame([])
    table = table.sort_values(COLUMNS[:-1], kind="stable").reset_index(drop=True)
    io.save_table(out, table)
    return table
