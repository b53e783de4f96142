"""The labelled subset of a semi-supervised run (`method_settings.<name>.labels`).

Seed 003 trains Mean Teacher, Local Label Propagation and the few-label control with a small
fraction of labelled images (~3 %, Fig. 4d) and sweeps that number (Fig. 4e-f). The subset is
a deterministic function of the training labels (the split's known-class training images, in
dataset order) and of the setting alone, never of the run's seed or method: every method given
the same setting sees the same labelled images.

Setting: exactly one of
    fraction: f in (0, 1]  ->  round(f * n_c) images of each class c (at least one),
    per_class: k >= 1      ->  k images of each class (every class must have k),
and `seed` (default 0). Stratified by class: each class's images are shuffled by a generator
seeded with (seed, class) and the first n_c taken, so subsets are nested: with one seed, a
smaller fraction's labelled images are all labelled at a larger one (a sweep adds labels,
never swaps them).

Unlabelled images carry the label `UNLABELLED` (-1) in what the training engine hands a
method; a method declares `label_subset = True` to accept that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

UNLABELLED = -1
KEYS = ("fraction", "per_class", "seed")


def check_setting(setting: Mapping[str, Any], per_class: int | None = None) -> None:
    """ValueError naming the offending key of `setting` (`per_class`: the fewest training
    images of any class, when known, so a per_class larger than that is refused)."""
    if not isinstance(setting, Mapping):
        raise ValueError(f"must be a mapping {{fraction | per_class, seed}}, got {setting!r}")
    unknown = sorted(set(setting) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    given = [k for k in ("fraction", "per_class") if setting.get(k) is not None]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of 'fraction' (of each class's images) and 'per_class' "
            f"(images of each class), got {' and '.join(given) or 'neither'}"
        )
    seed = setting.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"'seed' must be an int in [0, 2**32), got {seed!r}")
    if given == ["fraction"]:
        f = setting["fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"'fraction' must be a number in (0, 1], got {f!r}")
        return
    k = setting["per_class"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"'per_class' must be a positive int, got {k!r}")
    if per_class is not None and k > per_class:
        raise ValueError(
            f"'per_class' = {k}: more labelled images per class than the {per_class} "
            "training images of a class"
        )


def class_counts(labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64))


def labelled_per_class(setting: Mapping[str, Any], counts: np.ndarray) -> np.ndarray:
    """Labelled images of each class [C] for class sizes `counts` [C]."""
    counts = np.asarray(counts, dtype=np.int64)
    if setting.get("per_class") is not None:
        wanted = np.full_like(counts, setting["per_class"])
    else:
        wanted = np.maximum(1, np.rint(setting["fraction"] * counts).astype(np.int64))
    return np.where(counts > 0, np.minimum(wanted, counts), 0)


def labelled_mask(labels: np.ndarray, setting: Mapping[str, Any]) -> np.ndarray:
    """Boolean [N]: which training images keep their label (see the module docstring)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.min() < 0):
        raise ValueError("labels must be class indices >= 0, one per training image")
    counts = class_counts(labels)
    check_setting(setting, int(counts[counts > 0].min()) if labels.size else None)
    take = labelled_per_class(setting, counts)
    mask = np.zeros(len(labels), dtype=bool)
    seed = setting.get("seed", 0)
    for c in np.flatnonzero(counts):
        members = np.flatnonzero(labels == c)  # dataset order: fixed by the split
        order = np.random.default_rng([seed, int(c)]).permutation(len(members))
        mask[members[order[: take[c]]]] = True
    return mask


def masked_labels(labels: np.ndarray, setting: Mapping[str, Any] | None) -> np.ndarray:
    """`labels` with every unlabelled image's set to UNLABELLED (all kept when no setting)."""
    labels = np.asarray(labels, dtype=np.int64)
    if setting is None:
        return labels.copy()
    return np.where(labelled_mask(labels, setting), labels, UNLABELLED)


def n_labelled(setting: Mapping[str, Any], counts: np.ndarray) -> int:
    """Total labelled images for class sizes `counts` (figures' x axis, without the data)."""
    return int(labelled_per_class(setting, counts).sum())
