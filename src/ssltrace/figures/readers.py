"""Read and check figure inputs: study tables, per-run matrix files, figure settings.

Inputs arrive as `{role: path}` (`ssltrace figure --input ROLE=PATH`). A study table has the
role `table` (or another name the figure documents); per-run files have roles
`ROLE:METHOD:SEED` (e.g. `errors:simclr:0`), so one figure can read every run of a study.
Every check fails before drawing, with a message naming the file and the missing metric or array;
every file is verified as it is read (`ssltrace.io`), and a damaged one is removed, so that the
workflow's next run recomputes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ssltrace import io, tables
from ssltrace.figures import style


def input_path(inputs: dict, role: str) -> Path:
    """The path given for `role`, which must exist."""
    if role not in inputs:
        given = ", ".join(sorted(inputs)) or "none"
        raise ValueError(
            f"missing figure input {role!r} (pass --input {role}=PATH); inputs given: {given}"
        )
    path = Path(inputs[role])
    if not path.is_file():
        raise FileNotFoundError(f"figure input {role!r}: file {path} does not exist")
    return path


def read_metrics(inputs: dict, metrics: Sequence[str], role: str = "table") -> pd.DataFrame:
    """Rows of the study table `role` for `metrics`; every metric must have rows."""
    path = input_path(inputs, role)
    table = tables.read(path)
    present = set(table["metric"])
    for metric in metrics:
        if metric not in present:
            raise ValueError(
                f"{path} has no rows for metric {metric!r}; metrics present: "
                f"{', '.join(sorted(present)) or 'none'}"
            )
    return table[table["metric"].isin(metrics)].reset_index(drop=True)


def read_prefixed(inputs: dict, prefix: str, role: str = "table") -> pd.DataFrame:
    """Rows whose metric starts with `prefix` (e.g. `within_dissimilarity/`)."""
    path = input_path(inputs, role)
    table = tables.read(path)
    rows = table[table["metric"].str.startswith(prefix)]
    if rows.empty:
        raise ValueError(
            f"{path} has no rows for metrics {prefix}*; metrics present: "
            f"{', '.join(sorted(set(table['metric']))) or 'none'}"
        )
    return rows.reset_index(drop=True)


def run_inputs(inputs: dict, role: str) -> dict[tuple[str, int], Path]:
    """`{(method, seed): path}` of the per-run inputs `role:METHOD:SEED`, in legend order."""
    found = {}
    for key in inputs:
        parts = key.split(":")
        if parts[0] != role:
            continue
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(f"per-run figure input {key!r} must be named {role}:METHOD:SEED")
        found[(parts[1], int(parts[2]))] = input_path(inputs, key)
    if not found:
        given = ", ".join(sorted(inputs)) or "none"
        raise ValueError(
            f"missing per-run figure inputs {role}:METHOD:SEED "
            f"(pass --input {role}:simclr:0=PATH ...); inputs given: {given}"
        )
    order = {m: i for i, m in enumerate(style.ordered_methods(m for m, _ in found))}
    return dict(sorted(found.items(), key=lambda item: (order[item[0][0]], item[0][1])))


def load_arrays(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz matrix file (verified, `io.load_npz`); a missing one is
    named with the file."""
    return io.load_npz(path, list(keys))


def final_epoch(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each run's last analysed epoch (untrained runs have only epoch 0)."""
    last = table.groupby(["method", "seed"])["epoch"].transform("max")
    return table[table["epoch"] == last]


def layer_order(settings: dict, seen: Iterable[str]) -> list[str]:
    """Layers input → output: `settings['layer_order']` (set by the workflow) if given.

    Study tables are sorted alphabetically, so without it the order of first appearance
    is only a fallback for hand-made inputs.
    """
    seen = list(dict.fromkeys(str(s) for s in seen))
    order = settings.get("layer_order")
    if not order:
        return seen
    return [layer for layer in order if layer in set(seen)] + [s for s in seen if s not in order]


def chosen_layers(settings: dict, key: str, order: Sequence[str], default: list[str]) -> list[str]:
    """Layers named by settings[key] (checked against `order`), or `default` when unset."""
    wanted = settings.get(key)
    if wanted is None:
        return default
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = [layer for layer in wanted if layer not in order]
    if unknown:
        raise ValueError(
            f"figures.{key}: unknown layer {unknown[0]!r}; layers in the inputs: {', '.join(order)}"
        )
    return wanted


def early_deep(settings: dict, order: Sequence[str]) -> tuple[str, str]:
    """The early layer (first block after the input stem) and the deep one (backbone output).

    The head's layers (`head_fc1`, `head_fc2`: names starting `head_`) come last, so the
    backbone output is the layer before the first of them; `figures.early_layer` /
    `figures.deep_layer` override either.
    """
    n = len(order)
    heads = [i for i, name in enumerate(order) if str(name).startswith("head_")]
    backbone_end = heads[0] - 1 if heads else n - 2
    early = chosen_layers(settings, "early_layer", order, [order[min(1, n - 1)]])[0]
    deep = chosen_layers(settings, "deep_layer", order, [order[max(backbone_end, 0)]])[0]
    return early, deep


def deep_layer_rows(
    inputs: dict, metrics: Sequence[str], settings: dict
) -> tuple[pd.DataFrame, str]:
    """Rows of `metrics` (`read_metrics`) at the deep layer of `early_deep`, and that layer:
    the figures along training show one layer, not all."""
    data = read_metrics(inputs, metrics)
    layer = early_deep(settings, layer_order(settings, data["layer"]))[1]
    return data[data["layer"] == layer], layer


def matrix_layers(settings: dict, order: Sequence[str]) -> list[str]:
    """Layers of the matrix figures: settings or an early, a middle and the deep layer."""
    early, deep = early_deep(settings, order)
    i, j = order.index(early), order.index(deep)
    default = list(dict.fromkeys([early, order[(i + j) // 2], deep]))
    return chosen_layers(settings, "matrix_layers", order, default)


def chosen_methods(settings: dict, available: Iterable[str]) -> list[str]:
    """Methods of the per-method panels: settings['methods'] or all, in legend order."""
    available = style.ordered_methods(available)
    wanted = settings.get("methods")
    if wanted is None:
        return available
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise ValueError(
            f"figures.methods: method {unknown[0]!r} has no inputs; methods in the inputs: "
            f"{', '.join(available)}"
        )
    return style.ordered_methods(wanted)


def chosen_epochs(settings: dict, available: Iterable[int], n: int = 4) -> list[int]:
    """Epochs for snapshot panels: settings['epochs'] or n evenly spaced incl. first and last."""
    available = sorted({int(e) for e in available})
    wanted = settings.get("epochs")
    if wanted is not None:
        missing = [e for e in wanted if e not in available]
        if missing:
            raise ValueError(
                f"figures.epochs: epoch {missing[0]} was not analysed; analysed epochs: "
                f"{', '.join(map(str, available))}"
            )
        return sorted(set(wanted))
    picks = np.linspace(0, len(available) - 1, min(n, len(available)))
    return sorted({available[int(round(p))] for p in picks})


def formats(settings: dict) -> tuple[list[str], int]:
    return list(settings.get("formats", ["png", "pdf"])), int(settings.get("dpi", 200))
