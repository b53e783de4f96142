"""Alignment of a model's confusions with human ones (CIFAR-10H; Peterson et al. 2019).

CIFAR-10H gives, for each of the 10000 CIFAR-10 test images, how many of ~50 people chose
each class. `human_confusion` turns the counts into a class-by-class confusion matrix; a
model's matrix (e.g. `fewshot.prototype_confusion` on the same classes) is compared with it by
the Spearman rank correlation of their entries, off-diagonal by default: the diagonal holds
the accuracies, which would otherwise dominate the ranks and measure accuracy, not the
pattern of confusions.
"""

from __future__ import annotations

import numpy as np

from ssltrace import io
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, ProbeFile, layer_names


def human_confusion(counts, labels, per_image: bool = False) -> np.ndarray:
    """Human (pseudo-)confusion matrix [K, K] from per-image choice counts (seed 000 §2.5.2).

    Row k is the mean over the images whose true class is k of their choice histograms: the
    paper's "averaging the histograms of these classifications within each ground-truth object
    category"; its entries are mean numbers of people per image choosing each class.

    `per_image=True` divides each image's counts by their sum first (rows then sum to 1): every
    image weighs the same whatever its number of annotators. A named option, not the default:
    CIFAR-10H has ~50 annotators for every image, so the two barely differ there, but a user
    set with uneven annotation would be dominated by its most annotated images without it.

    Args:
        counts: non-negative [M, K] counts (or probabilities) of each class being chosen.
        labels: int [M] true class 0..K-1 of each image; every class must occur.
    """
    counts = np.asarray(counts, dtype=np.float64)
    labels = np.asarray(labels)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] < 2:
        raise ValueError(f"counts must be [M, K] with M >= 1, K >= 2, got shape {counts.shape}")
    n_classes = counts.shape[1]
    if labels.shape != (counts.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an int array [{counts.shape[0]}] (one per row of counts), got "
            f"shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1} (the columns of counts)")
    if not np.all(np.isfinite(counts)) or counts.min() < 0:
        raise ValueError("counts must be finite and non-negative")
    totals = counts.sum(axis=1, keepdims=True)
    if np.any(totals == 0):
        raise ValueError(f"counts has rows summing to 0: {np.flatnonzero(totals == 0)[:5]}...")
    per_class = np.bincount(labels, minlength=n_classes)
    if per_class.min() == 0:
        raise ValueError(f"labels has no image of classes {np.flatnonzero(per_class == 0)}")
    sums = np.zeros((n_classes, n_classes))
    np.add.at(sums, labels, counts / totals if per_image else counts)
    return sums / per_class[:, None]


def compare_confusions(model, human, offdiagonal: bool = True) -> float:
    """Spearman rank correlation between the entries of two [K, K] confusion matrices.

    `offdiagonal=True` (the primary measure) uses the K(K-1) off-diagonal entries only;
    False uses all K² entries. NaN when either set of entries is constant.
    """
    import scipy.stats

    a, b = _entries(model, human, offdiagonal)
    return float(scipy.stats.spearmanr(a, b).statistic)


def permutation_pvalue(
    model,
    human,
    offdiagonal: bool = True,
    n_perm: int = 1000,
    seed: int | np.random.Generator = 0,
) -> float:
    """One-sided permutation p-value of `compare_confusions(model, human, offdiagonal)`.

    Null: the model's class labels are exchangeable. Each permutation relabels the model's
    classes, permuting its rows and columns jointly (M[π][:, π]), so the matrix keeps its own
    structure (row sums, which entries share a class) while its correspondence with the human
    classes is broken. p = (1 + #{ρ_perm >= ρ_obs}) / (1 + n_perm), so p > 0 always.
    """
    import scipy.stats

    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm must be a positive integer, got {n_perm!r}")
    model_entries, human_entries = _entries(model, human, offdiagonal)
    # Spearman's rho is Pearson's r of the (average-tie) ranks, as in scipy.stats.spearmanr.
    model_ranks = scipy.stats.rankdata(model_entries)
    human_ranks = scipy.stats.rankdata(human_entries)
    observed = _pearson(model_ranks, human_ranks)
    if np.isnan(observed):
        return float("nan")
    k = len(np.asarray(model))
    rng = np.random.default_rng(seed)
    # A joint permutation maps the selected entries onto themselves, so the permuted
    # entries are a reindexing of the model's ranks: rank once, reindex per permutation.
    rows, cols = _selected(k, offdiagonal)
    position = np.full((k, k), -1)
    position[rows, cols] = np.arange(len(rows))
    perms = rng.permuted(np.tile(np.arange(k), (n_perm, 1)), axis=1)
    reindexed = model_ranks[position[perms[:, rows], perms[:, cols]]]
    null = _pearson(reindexed, human_ranks)
    # The tolerance keeps permutations that reproduce the observed ranks from losing the
    # comparison to rounding.
    exceed = np.count_nonzero(null >= observed - 1e-12)
    return float((1 + exceed) / (1 + n_perm))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of x (or of x) with y; NaN for a constant row."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc @ yc) / (np.linalg.norm(xc, axis=-1) * np.linalg.norm(yc))


def _selected(k: int, offdiagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.eye(k, dtype=bool) if offdiagonal else np.ones((k, k), dtype=bool)
    return np.nonzero(keep)


def _entries(model, human, offdiagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    model = np.asarray(model, dtype=np.float64)
    human = np.asarray(human, dtype=np.float64)
    for name, m in (("model", model), ("human", human)):
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 3:
            raise ValueError(f"{name} must be a square [K, K] matrix with K >= 3, got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if model.shape != human.shape:
        raise ValueError(f"model {model.shape} and human {human.shape} must have the same shape")
    rows, cols = _selected(len(model), offdiagonal)
    return model[rows, cols], human[rows, cols]


@ANALYSES.register("human")
class HumanAlignment(PerEpochAnalysis):
    """Few-shot confusion vs the human confusion per epoch and layer (seed 000 §2.5).

    The model matrix is the row-normalised confusion of nearest-prototype classification over
    all classes at once (`fewshot.prototype_confusion`); the human matrix averages the images'
    choice histograms per true class (`human_confusion`, §2.5.2). Both are compared by
    Spearman's rho over the whole matrices, the paper's measure (§2.6.2), and off the diagonal,
    where the accuracies (which dominate the ranks) are left out; each with a permutation p.
    Array file `confusion`: [epoch, layer, C, C] plus the human matrix.
    """

    name = "human"
    summary = (
        "multi-class few-shot confusion vs CIFAR-10H human confusion, Spearman off-diagonal "
        "and full, permutation p (seed 000 §2.5)"
    )
    inputs = {"human": Activations("human"), "probe": ProbeFile("human")}
    arrays = ("confusion",)
    sections = ("fewshot", "human_alignment")
    resources = {"mem_mb": 8000, "runtime": 60}
    stacked = "confusion"

    def prepare(self, job):
        self.probe_path = job.inputs["probe"]
        self.probe = io.load_npz(self.probe_path)
        self.human = human_confusion(
            self.probe["human_counts"], self.probe["labels"], self.settings["per_image"]
        )

    def cache_settings(self):
        return {**self.settings, "human": self.human.tolist()}

    def epoch(self, role, acts):
        from ssltrace.analysis.fewshot import prototype_confusion, shot_arguments

        if not np.array_equal(acts["labels"], self.probe["labels"]):
            raise ValueError(f"activations were not extracted from probe set {self.probe_path}")
        rows, mats = [], []
        for layer in layer_names(acts):
            model = prototype_confusion(
                acts[layer], acts["labels"], **shot_arguments(self.settings)
            )
            mats.append(model)
            rows += [(layer, role, metric, value) for metric, value in self._measures(model)]
        return rows, {"confusion": np.stack(mats), "layers": acts["layers"]}

    def _measures(self, model: np.ndarray) -> list[tuple[str, float]]:
        found = [
            ("human_spearman_offdiag", compare_confusions(model, self.human)),
            ("human_spearman_full", compare_confusions(model, self.human, False)),
            ("fewshot_accuracy", np.trace(model) / len(model)),
        ]
        if self.settings["permutations"]:
            n, seed = self.settings["permutations"], self.settings["seed"]
            full = permutation_pvalue(model, self.human, False, n, seed=seed)
            found.append(("human_spearman_full_pvalue", full))
            offdiag = permutation_pvalue(model, self.human, True, n, seed=seed)
            found.append(("human_spearman_offdiag_pvalue", offdiag))
        return found

    def extra_arrays(self):
        return {"human": self.human, "class_names": self.probe["class_names"]}
