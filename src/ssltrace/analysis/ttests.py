"""Study-level t-test matrices between methods (seed 003 Extended Data Figs. 1 and 8).

Unlike the per-run analyses, these compare runs, so they are computed once per study from
the per-run outputs, by the rules `predictivity_ttests` and `behaviour_ttests`, into the
study matrix files `tables/predictivity_ttests.npz` and `tables/behaviour_ttests.npz`
(`layout.STUDY_ARRAYS`), which the figures read.

- `neural_ttests`: per readout, kind (raw / ceiled) and region, each method at its best
  layer (highest median over the region's neuroids) at its runs' final epoch, each neuroid's
  score averaged over the method's seeds; paired two-tailed t-tests over neuroids
  (`scipy.stats.ttest_rel`, neuroids with a NaN in either method dropped) between every pair
  of methods (ED Fig. 1).
- `behaviour_ttests`: per behaviour set and layer, the behavioural consistency of each run at
  its final epoch; unpaired two-tailed t-tests over seeds (`scipy.stats.ttest_ind`) between
  every pair of methods (ED Fig. 8). A method with one seed has no test (NaN).

Cell (i, j) of `t` and `p` compares method i with method j (t > 0: i exceeds j); the diagonal
is NaN. Methods are sorted by name; the figures put them in legend order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ssltrace.analysis.predictivity import ttest_matrix

CONSISTENCY = "behaviour_consistency"


def neural_ttests(score_files: Mapping[tuple[str, int], str | Path]) -> dict[str, np.ndarray]:
    """The ED Fig. 1 matrices from each run's `predictivity` scores file ({(method, seed):
    path}). Arrays: `t`, `p` [readout, kind, region, method, method]; `neuroids` (pairs
    tested) of the same shape; `best_layer` [readout, kind, region, method]; `methods`,
    `seeds` [method] (runs averaged), `epoch` [method] (final epoch used), `regions`,
    `readouts`, `kinds`, `layers`."""
    if not score_files:
        raise ValueError("neural t-tests need at least one run's predictivity scores file")
    per_method, meta = _final_scores(score_files)
    methods = sorted(per_method)
    regions = sorted(set(meta["region"].tolist()))
    shape = (len(meta["readouts"]), len(meta["kinds"]), len(regions))
    m = len(methods)
    t, p, pairs = (np.full((*shape, m, m), np.nan) for _ in range(3))
    best = np.full((*shape, m), "", dtype=object)
    for r, k, g in np.ndindex(*shape):
        member = meta["region"] == regions[g]
        samples = {}
        for i, method in enumerate(methods):
            layer, samples[method] = best_layer_scores(per_method[method][k, r][:, member])
            best[r, k, g, i] = "" if layer is None else meta["layers"][layer]
        t[r, k, g], p[r, k, g] = _quiet_ttests(samples, paired=True)
        finite = np.stack([np.isfinite(samples[name]) for name in methods])
        pairs[r, k, g] = (finite[:, None] & finite[None]).sum(axis=2)
    return {
        "t": t,
        "p": p,
        "neuroids": pairs,
        "best_layer": best.astype(str),
        "methods": np.array(methods),
        "seeds": np.array([meta["seeds"][name] for name in methods]),
        "epoch": np.array([meta["epoch"][name] for name in methods]),
        "regions": np.array(regions),
        "readouts": meta["readouts"],
        "kinds": meta["kinds"],
        "layers": meta["layers"],
    }


def best_layer_scores(scores: np.ndarray) -> tuple[int | None, np.ndarray]:
    """(index of the layer with the highest median over neuroids, that layer's scores) of
    scores [layer, neuroid]; ties go to the earlier layer; (None, NaNs) when no layer has a
    finite score (e.g. ceiled scores without a ceiling)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN layers
        medians = np.nanmedian(np.where(np.isfinite(scores), scores, np.nan), axis=1)
    if not np.isfinite(medians).any():
        return None, np.full(scores.shape[1], np.nan)
    layer = int(np.nanargmax(medians))
    return layer, scores[layer]


def _final_scores(score_files) -> tuple[dict[str, np.ndarray], dict]:
    """Per method: the final epoch's scores [kind, readout, layer, neuroid] averaged over its
    seeds; and the axis labels, which every run must share."""
    from ssltrace import io

    stacks: dict[str, list] = {}
    meta: dict = {"seeds": {}, "epoch": {}}
    keys = ("readouts", "kinds", "layers", "region", "neuroid")
    for (method, _seed), path in sorted(score_files.items()):
        arrays = io.load_npz(path)
        missing = [key for key in ("scores", "epochs", *keys) if key not in arrays]
        if missing:
            raise ValueError(f"{path}: not a predictivity scores file (missing {missing})")
        for key in keys:
            value = arrays[key].astype(str)
            if key in meta and not np.array_equal(meta[key], value):
                raise ValueError(f"{path}: its {key} differ from the other runs' scores files")
            meta[key] = value
        stacks.setdefault(method, []).append(arrays["scores"][-1])
        meta["seeds"][method] = meta["seeds"].get(method, 0) + 1
        meta["epoch"][method] = max(meta["epoch"].get(method, 0), int(arrays["epochs"][-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # neuroids NaN in every seed
        means = {m: np.nanmean(np.stack(s), axis=0) for m, s in stacks.items()}
    return means, meta


def behaviour_ttests(table: pd.DataFrame, metric: str = CONSISTENCY) -> dict[str, np.ndarray]:
    """The ED Fig. 8 matrices from the `behaviour` study table (tidy rows). Arrays: `t`, `p`
    [probe, layer, method, method]; `seeds` [probe, layer, method] (runs with a value);
    `methods`, `probes` (behaviour sets), `layers`, `metric`."""
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(f"the behaviour table has no rows for metric {metric!r}")
    last = rows.groupby(["method", "seed"])["epoch"].transform("max")
    rows = rows[rows["epoch"] == last]
    methods = sorted(rows["method"].unique())
    probes = sorted(rows["probe"].unique())
    layers = list(dict.fromkeys(rows["layer"]))
    m = len(methods)
    t, p = (
        np.full((len(probes), len(layers), m, m), np.nan),
        np.full((len(probes), len(layers), m, m), np.nan),
    )
    seeds = np.zeros((len(probes), len(layers), m), dtype=np.int64)
    for (probe, layer), group in rows.groupby(["probe", "layer"]):
        a, b = probes.index(probe), layers.index(layer)
        samples = {name: group[group["method"] == name]["value"].to_numpy() for name in methods}
        t[a, b], p[a, b] = _quiet_ttests(samples, paired=False)
        seeds[a, b] = [np.isfinite(samples[name]).sum() for name in methods]
    return {
        "t": t,
        "p": p,
        "seeds": seeds,
        "methods": np.array(methods),
        "probes": np.array(probes),
        "layers": np.array(layers),
        "metric": np.array(metric),
    }


def _quiet_ttests(samples: dict, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """`ttest_matrix`; pairs without enough values (one seed, no finite neuroid) give NaN
    without scipy's warnings."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        _, t, p = ttest_matrix(samples, paired=paired)
    return t, p
