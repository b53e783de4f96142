"""Probe-set selection: which images an analysis looks at, drawn once per study.

The RDM probe set of the learning-trajectory analysis (seed paper 001) is a fixed set of images
(96 by default) balanced over a few broad category groups, each group a union of coarse classes.
Drawing it once per study, from a seed, keeps every method, seed and epoch comparable: the RDMs
of all checkpoints are computed on exactly the same images in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Broad groups for CIFAR-100's 20 coarse classes, after the animate / inanimate and natural /
# man-made divisions that category-structure studies of RDMs look for (people, animals,
# vehicles, plants and natural scenes). The four remaining coarse classes — food_containers,
# household_electrical_devices, household_furniture and large_man-made_outdoor_things — are
# left out on purpose: they are a mixed bag of man-made objects and scenes that belongs to
# none of the four groups, and a catch-all group would blur the between-group contrast.
CIFAR100_GROUPS: dict[str, list[str]] = {
    "people": ["people"],
    "animals": [
        "aquatic_mammals",
        "fish",
        "insects",
        "large_carnivores",
        "large_omnivores_and_herbivores",
        "medium_mammals",
        "non-insect_invertebrates",
        "reptiles",
        "small_mammals",
    ],
    "vehicles": ["vehicles_1", "vehicles_2"],
    "plants_scenes": [
        "flowers",
        "fruit_and_vegetables",
        "trees",
        "large_natural_outdoor_scenes",
    ],
}


def rdm_probe_indices(
    coarse_labels: np.ndarray,
    coarse_names: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
    n_images: int = 96,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw an RDM probe set balanced over category groups.

    Args:
        coarse_labels: int [N], coarse class index of every candidate image.
        coarse_names: the C coarse class names; `coarse_labels` index into them.
        groups: group name -> coarse class names it contains (default `CIFAR100_GROUPS`).
            Groups must not share a coarse class.
        n_images: probe-set size; split over the groups as evenly as possible (sizes differ
            by at most one, the larger quotas going to the groups listed first). Within a
            group the quota is spread evenly over its coarse classes, so a group of nine
            animal classes is not dominated by whichever class happens to be drawn most.
        seed: the draw is a pure function of (inputs, seed).

    Returns:
        (indices int64 [n_images] into `coarse_labels`, group_of_each int64 [n_images] index
        into `list(groups)`), ordered group by group, then by coarse class, then by index, so
        an RDM drawn in this order shows the groups as diagonal blocks.
    """
    groups = CIFAR100_GROUPS if groups is None else groups
    coarse_labels = _check_labels(coarse_labels, "coarse_labels")
    coarse_names = [str(name) for name in coarse_names]
    if coarse_labels.size and coarse_labels.max() >= len(coarse_names):
        raise ValueError(
            f"coarse_labels holds index {coarse_labels.max()} but coarse_names has only "
            f"{len(coarse_names)} names"
        )
    group_classes = _resolve_groups(groups, coarse_names)
    if not isinstance(n_images, (int, np.integer)) or n_images < len(group_classes):
        raise ValueError(
            f"n_images must be an integer >= the number of groups ({len(group_classes)}), "
            f"got {n_images!r}"
        )

    rng = np.random.default_rng(seed)
    quotas = _even_quotas(n_images, [np.inf] * len(group_classes), rng=None)
    indices, group_of_each = [], []
    for g, (name, classes) in enumerate(group_classes.items()):
        members = [np.flatnonzero(coarse_labels == c) for c in classes]
        available = sum(len(m) for m in members)
        if available < quotas[g]:
            raise ValueError(
                f"group {name!r} has {available} images among coarse classes "
                f"{[coarse_names[c] for c in classes]} but needs {quotas[g]} "
                f"(n_images={n_images} over {len(group_classes)} groups)"
            )
        per_class = _even_quotas(quotas[g], [len(m) for m in members], rng=rng)
        for pool, k in zip(members, per_class, strict=True):
            indices.append(np.sort(rng.choice(pool, size=k, replace=False)))
            group_of_each.append(np.full(k, g, dtype=np.int64))
    return np.concatenate(indices).astype(np.int64), np.concatenate(group_of_each)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, found {labels.min()}")
    return labels


def _resolve_groups(
    groups: Mapping[str, Sequence[str]], coarse_names: list[str]
) -> dict[str, list[int]]:
    if not groups:
        raise ValueError("groups must name at least one group of coarse classes")
    position = {name: i for i, name in enumerate(coarse_names)}
    owner: dict[str, str] = {}
    resolved = {}
    for group, names in groups.items():
        if isinstance(names, str) or not names:
            raise ValueError(f"group {group!r} must be a non-empty list of coarse names")
        for name in names:
            if name not in position:
                raise ValueError(
                    f"group {group!r} names coarse class {name!r}, which is not in "
                    f"coarse_names ({', '.join(coarse_names)})"
                )
            if name in owner:
                raise ValueError(
                    f"coarse class {name!r} is in both group {owner[name]!r} and {group!r}"
                )
            owner[name] = group
        resolved[str(group)] = [position[name] for name in names]
    return resolved


def _even_quotas(
    total: int, capacities: Sequence[float], rng: np.random.Generator | None
) -> list[int]:
    """Split `total` as evenly as possible under per-slot capacities (water-filling).

    The remainder left after equal shares goes to the first open slots, or to randomly
    chosen ones when `rng` is given (so no class is favoured by its position in a list).
    """
    quotas = [0] * len(capacities)
    left = int(total)
    while left > 0:
        open_slots = [i for i, cap in enumerate(capacities) if quotas[i] < cap]
        if not open_slots:
            raise ValueError(f"cannot place {total} items in capacities {list(capacities)}")
        share = left // len(open_slots)
        if share == 0:
            order = rng.permutation(open_slots) if rng is not None else open_slots
            for i in order[:left]:
                quotas[i] += 1
            break
        for i in open_slots:
            add = int(min(share, capacities[i] - quotas[i]))
            quotas[i] += add
            left -= add
    return quotas
