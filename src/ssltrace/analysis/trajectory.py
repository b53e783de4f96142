"""Learning-trajectory measures on RDMs across training epochs (seed paper 001).

- `epoch_stability`: how much a layer's representational geometry still changes from one
  epoch to the next (correlation of consecutive epochs' RDMs; seed 001 Fig. 1). Values near
  1 mean the geometry has settled.
- `category_dissimilarity`: mean dissimilarity within each category group and between the
  group and everything else (seed 001 Fig. 2); category structure shows as within < between.
- `Trajectory`: the pipeline analysis applying both to every layer of a run's RDM probe set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, EpochResult, PerEpochAnalysis, Row, layer_names
from ssltrace.analysis.rdm import COMPARE_METHODS, compare, compute_rdm, upper


def epoch_stability(
    rdms: np.ndarray | Mapping[int, np.ndarray], method: str = "spearman"
) -> np.ndarray:
    """Similarity of each epoch's RDM to the next one's: [E − 1] for E epochs.

    Args:
        rdms: [E, n, n] RDMs (or [E, m] upper-triangle vectors) in epoch order, or a dict
            epoch -> RDM, taken in increasing epoch order (element i then compares the i-th
            and (i+1)-th smallest epochs, whatever their spacing).
        method: an `rdm.compare` method ('pearson', 'spearman', 'kendall_tau_a').
    """
    if method not in COMPARE_METHODS:
        raise ValueError(f"method must be one of {COMPARE_METHODS}, got {method!r}")
    if isinstance(rdms, Mapping):
        stack = [rdms[epoch] for epoch in sorted(rdms)]
    else:
        stack = list(np.asarray(rdms, dtype=np.float64))
    if len(stack) < 2:
        raise ValueError(f"rdms must hold at least two epochs, got {len(stack)}")
    vectors = [_vector(r, i) for i, r in enumerate(stack)]
    if len({v.size for v in vectors}) != 1:
        raise ValueError("rdms must all describe the same probe images (same size)")
    return np.array([compare(a, b, method) for a, b in zip(vectors[:-1], vectors[1:], strict=True)])


def category_dissimilarity(
    rdm: np.ndarray, groups_of_each: np.ndarray, group_names: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """Mean within-group and between-group dissimilarity of every category group.

    within = mean of rdm[i, j] over pairs i < j of group members; between = mean of
    rdm[i, j] over members i and non-members j (images of other groups and ungrouped ones).

    Args:
        rdm: symmetric [n, n] RDM.
        groups_of_each: int [n], the group index (into `group_names`) of every image, or -1
            for an image in no group (it then only counts as a non-member).
        group_names: the G group names.
    Returns:
        dict group name -> (within, between).
    """
    rdm = np.asarray(rdm, dtype=np.float64)
    if rdm.ndim != 2 or rdm.shape[0] != rdm.shape[1]:
        raise ValueError(f"rdm must be a square [n, n] matrix, got shape {rdm.shape}")
    if not np.allclose(rdm, rdm.T, equal_nan=True):
        raise ValueError("rdm must be symmetric")
    groups = np.asarray(groups_of_each)
    if groups.shape != (rdm.shape[0],) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(
            f"groups_of_each must be an integer array of shape ({rdm.shape[0]},), "
            f"got {groups.dtype} {groups.shape}"
        )
    names = [str(name) for name in group_names]
    if groups.size and (groups.min() < -1 or groups.max() >= len(names)):
        raise ValueError(
            f"groups_of_each must index group_names (0..{len(names) - 1}) or be -1, "
            f"found values {groups.min()}..{groups.max()}"
        )
    result = {}
    for g, name in enumerate(names):
        member = groups == g
        n_in = int(member.sum())
        if n_in < 2 or n_in == groups.size:
            raise ValueError(
                f"group {name!r} has {n_in} of {groups.size} images; within and between "
                "dissimilarity need at least 2 members and at least 1 non-member"
            )
        within = upper(rdm[np.ix_(member, member)]).mean()
        between = rdm[np.ix_(member, ~member)].mean()
        result[name] = (float(within), float(between))
    return result


def _vector(rdm: np.ndarray, index: int) -> np.ndarray:
    rdm = np.asarray(rdm, dtype=np.float64)
    if rdm.ndim == 1:
        return rdm
    if rdm.ndim == 2 and rdm.shape[0] == rdm.shape[1]:
        return upper(rdm)
    raise ValueError(f"rdms[{index}] must be a square RDM or a vector, got shape {rdm.shape}")


@ANALYSES.register("trajectory")
class Trajectory(PerEpochAnalysis):
    """RDMs of the RDM probe set along training (seed 001 Figs. 1-2).

    Rows: `within_dissimilarity/<group>` and `between_dissimilarity/<group>` per epoch, and
    `rdm_stability_<compare>` at epoch e comparing the RDMs of the previous analysed epoch
    and e (`epoch_stability`). Array file `rdms`: [epoch, layer, n, n] (float32).
    """

    name = "trajectory"
    summary = (
        "RDMs along training: epoch-to-epoch stability and within/between-group "
        "dissimilarity of category groups (seed 001 Figs. 1-2)"
    )
    inputs = {"rdm": Activations("rdm")}
    arrays = ("rdms",)
    sections = ("trajectory",)
    stacked = "rdms"

    def cache_settings(self):
        return {"rdm_metric": self.settings["rdm_metric"]}  # comparisons are redone, never cached

    def epoch(self, role, acts):
        groups = [str(g) for g in acts["coarse_names"]]
        layers = layer_names(acts)
        rdms = np.stack([compute_rdm(acts[layer], self.settings["rdm_metric"]) for layer in layers])
        rows = []
        for layer, rdm in zip(layers, rdms, strict=True):
            for group, (within, between) in category_dissimilarity(
                rdm, acts["coarse"], groups
            ).items():
                rows.append((layer, role, f"within_dissimilarity/{group}", within))
                rows.append((layer, role, f"between_dissimilarity/{group}", between))
        arrays = {"rdms": rdms, "layers": acts["layers"], "group_of_image": acts["coarse"]}
        return rows, {**arrays, "groups": acts["coarse_names"]}

    def across(self, results: list[EpochResult]) -> list[Row]:
        if len(results) < 2:
            return []
        layers = [str(x) for x in results[0].arrays["layers"]]
        rows = []
        for li, layer in enumerate(layers):
            by_epoch = np.stack([r.arrays["rdms"][li] for r in results])
            for how in self.settings["compare"]:
                values = epoch_stability(by_epoch, how)
                rows += [
                    (r.epoch, layer, r.role, f"rdm_stability_{how}", v)
                    for r, v in zip(results[1:], values, strict=True)
                ]
        return rows

    def run(self, job):
        result = super().run(job)
        result.arrays["rdms"]["rdms"] = result.arrays["rdms"]["rdms"].astype(np.float32)
        return result
