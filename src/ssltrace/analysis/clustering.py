"""Do few-shot confusions group fine classes into their coarse classes? (seed 000, §2.6)

A pairwise error matrix (`fewshot.pairwise_prototype_errors`) becomes a dissimilarity
(`error_dissimilarity`), which hierarchical clustering cuts into as many clusters as there
are coarse classes (`cluster`). The agreement of clusters and coarse classes is their mutual
information in bits (seed 000, Eq. 10), tested against a permutation null, and shown as a
cluster-by-class count matrix whose rows are matched to classes (seed 000, Fig. 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssltrace import io
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Analysis, Artifact, Job, Result

LINKAGES = ("average", "single", "complete", "weighted", "ward")


def error_dissimilarity(errors) -> np.ndarray:
    """Symmetric dissimilarity D [C, C] from a pairwise error matrix E [C, C] (entries in [0, 1]).

    D_ab = 1 - (E_ab + E_ba) / 2 off the diagonal, D_aa = 0.

    Classes the prototypes confuse often are similar, so D falls as the symmetrised error
    rises. The map is strictly decreasing and needs no clipping, so the ranking of pairs is
    kept and no pairs are tied artificially (single and complete linkage depend only on that
    ranking, average linkage also on the differences, which are kept as well). D lies in
    [0, 1]: chance-level confusion (error 0.5) gives 0.5, perfect separation 1. D need not
    satisfy the triangle inequality, which 'ward' linkage assumes.
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != e.shape[1] or e.shape[0] < 2:
        raise ValueError(f"errors must be a square [C, C] matrix with C >= 2, got {e.shape}")
    if not np.all(np.isfinite(e)) or e.min() < 0 or e.max() > 1:
        raise ValueError("errors must be finite error rates in [0, 1]")
    d = 1.0 - (e + e.T) / 2.0
    np.fill_diagonal(d, 0.0)
    return d


def linkage_matrix(dissimilarity, linkage: str = "average") -> np.ndarray:
    """scipy linkage matrix Z [C-1, 4] of a symmetric dissimilarity matrix (for dendrograms).

    'ward' treats the dissimilarities as Euclidean distances (scipy's convention).
    """
    import scipy.cluster.hierarchy as sch
    import scipy.spatial.distance

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)}, got {linkage!r}")
    d = np.asarray(dissimilarity, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] < 2:
        raise ValueError(f"dissimilarity must be a square [C, C] matrix, C >= 2, got {d.shape}")
    if not np.all(np.isfinite(d)) or d.min() < 0:
        raise ValueError("dissimilarity must be finite and non-negative")
    if not np.allclose(d, d.T, rtol=0, atol=1e-12) or np.any(np.diag(d) != 0):
        raise ValueError("dissimilarity must be symmetric with a zero diagonal")
    condensed = scipy.spatial.distance.squareform((d + d.T) / 2.0, checks=False)
    return sch.linkage(condensed, method=linkage)


def cut_linkage(z: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cut a linkage tree into exactly `n_clusters` clusters: labels [C] in 0..n_clusters-1.

    `fcluster(criterion='maxclust')` cuts at a height and so yields fewer clusters when
    merges tie at that height; `cut_tree` undoes merges in the tree's order instead, which
    always leaves the number asked for.
    """
    import scipy.cluster.hierarchy as sch

    n_items = len(z) + 1
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise ValueError(f"n_clusters must be an integer, got {n_clusters!r}")
    if not 1 <= n_clusters <= n_items:
        raise ValueError(f"n_clusters must be in 1..{n_items} (the number of items)")
    labels = sch.cut_tree(z, n_clusters=n_clusters).ravel()
    if len(np.unique(labels)) != n_clusters:  # cut_tree misbehaves on non-monotone trees
        raise RuntimeError(f"cut_tree gave {len(np.unique(labels))} clusters, not {n_clusters}")
    return labels.astype(np.int64)


def cluster(dissimilarity, n_clusters: int, linkage: str = "average") -> np.ndarray:
    """Hierarchical clustering into exactly `n_clusters` clusters: labels [C] (0..n-1).

    `linkage_matrix` gives the tree itself (for a dendrogram).
    """
    return cut_linkage(linkage_matrix(dissimilarity, linkage), n_clusters)


def mutual_information_bits(clusters, classes) -> float:
    """I(cluster; class) = Σ p(k,c) log2[p(k,c) / (p(k) p(c))] in bits (seed 000, Eq. 10).

    p are the empirical frequencies over items (fine classes); log2(K) is the maximum for K
    balanced groups recovered perfectly.
    """
    joint = _contingency(clusters, classes) / len(clusters)
    return float(_mi_bits(joint[None])[0])


def normalised_mutual_information(clusters, classes) -> float:
    """Mutual information divided by the arithmetic mean of the two entropies.

    The same normalisation as sklearn's `normalized_mutual_info_score` default; 1 when both
    labelings have a single group (sklearn's convention), in [0, 1] otherwise.
    """
    joint = _contingency(clusters, classes) / len(clusters)
    mean_entropy = (_entropy_bits(joint.sum(axis=1)) + _entropy_bits(joint.sum(axis=0))) / 2
    if mean_entropy == 0:
        return 1.0
    return float(_mi_bits(joint[None])[0] / mean_entropy)


def correspondence_matrix(clusters, classes) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-by-class counts with rows matched to classes (seed 000, Fig. 7).

    Rows are the clusters (sorted unique labels), columns the classes (sorted unique labels).
    A maximum-weight one-to-one assignment of clusters to classes
    (`scipy.optimize.linear_sum_assignment`, maximising the matched counts) orders the rows:
    matched clusters by the index of their class, then unmatched ones. With at least as many
    clusters as classes the matches fill the diagonal.

    Returns:
        (counts [K, C] int64 with rows in the new order, row_order [K]: row i is cluster
        row_order[i] of the sorted unique cluster labels).
    """
    import scipy.optimize

    counts = _contingency(clusters, classes)
    matched_rows, matched_cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
    first = matched_rows[np.argsort(matched_cols)]
    rest = np.setdiff1d(np.arange(len(counts)), first)
    row_order = np.concatenate([first, rest]).astype(np.int64)
    return counts[row_order], row_order


def mi_permutation_pvalue(
    clusters, classes, n_perm: int = 1000, seed: int | np.random.Generator = 0
) -> float:
    """One-sided permutation p-value of `mutual_information_bits(clusters, classes)`.

    Null: cluster assignments are unrelated to classes. Each permutation shuffles the cluster
    labels over the items (keeping the cluster sizes); p = (1 + #{I_perm >= I_obs}) /
    (1 + n_perm).
    """
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm must be a positive integer, got {n_perm!r}")
    k_index, c_index = _codes(clusters, classes)
    n_k, n_c, n = k_index.max() + 1, c_index.max() + 1, len(k_index)
    observed = _mi_bits(_joint_counts(k_index[None], c_index, n_k, n_c) / n)[0]
    shuffled = np.random.default_rng(seed).permuted(np.tile(k_index, (n_perm, 1)), axis=1)
    null = _mi_bits(_joint_counts(shuffled, c_index, n_k, n_c) / n)
    # Shuffles that reproduce the observed table must count as >= despite rounding.
    exceed = np.count_nonzero(null >= observed - 1e-12)
    return float((1 + exceed) / (1 + n_perm))


def best_layer(
    table,
    metric: str = "mi_bits",
    by: Sequence[str] = ("method", "seed", "epoch", "probe"),
):
    """The row with the highest `metric` value within each group of `by` (a tidy table).

    With the default grouping this picks, per run, epoch and probe, the layer whose clusters
    carry the most information about the coarse classes; pass by=("method", "seed") to
    pick over epochs too. Ties go to the first row in table order; NaN values are ignored.

    Returns:
        pandas.DataFrame: the chosen rows (columns of `table`), one per group.
    """
    missing = [c for c in (*by, "layer", "metric", "value") if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; expected a tidy metric table")
    rows = table[(table["metric"] == metric) & table["value"].notna()]
    if rows.empty:
        raise ValueError(f"table has no non-NaN values of metric {metric!r}")
    best = rows.groupby(list(by), sort=True)["value"].idxmax()
    return rows.loc[best.to_numpy()].reset_index(drop=True)


def _codes(clusters, classes) -> tuple[np.ndarray, np.ndarray]:
    clusters, classes = np.asarray(clusters), np.asarray(classes)
    if clusters.ndim != 1 or classes.shape != clusters.shape or len(clusters) == 0:
        raise ValueError(
            f"clusters and classes must be 1-D label arrays of the same non-zero length, got "
            f"shapes {clusters.shape} and {classes.shape}"
        )
    return np.unique(clusters, return_inverse=True)[1], np.unique(classes, return_inverse=True)[1]


def _contingency(clusters, classes) -> np.ndarray:
    k_index, c_index = _codes(clusters, classes)
    return _joint_counts(k_index[None], c_index, k_index.max() + 1, c_index.max() + 1)[0]


def _joint_counts(k_index: np.ndarray, c_index: np.ndarray, n_k: int, n_c: int) -> np.ndarray:
    """Contingency tables [P, K, C] of P cluster labelings k_index [P, n] against c_index [n]."""
    n_tables = len(k_index)
    code = (np.arange(n_tables)[:, None] * n_k + k_index) * n_c + c_index
    return np.bincount(code.ravel(), minlength=n_tables * n_k * n_c).reshape(n_tables, n_k, n_c)


def _mi_bits(joint: np.ndarray) -> np.ndarray:
    """Mutual information in bits of each joint distribution joint [P, K, C] (summing to 1)."""
    outer = joint.sum(axis=2, keepdims=True) * joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log2(joint / outer), 0.0)
    return np.clip(terms.sum(axis=(1, 2)), 0.0, None)  # rounding can dip below 0


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@ANALYSES.register("clustering")
class Clustering(Analysis):
    """Per epoch and layer: clusters of the few-shot error matrix vs the coarse classes.

    Rows: `mi_bits`, `nmi`, `mi_pvalue` (with permutations) per layer, and per epoch one
    `best_layer_mi_bits` row at the layer with the highest MI. Array file `clusters`: cluster
    labels, correspondence matrices (clusters x coarse classes, rows matched by maximum-weight
    assignment, Fig. 7) and linkages, [epoch, layer, ...]. Cheap, so not cached.
    """

    name = "clustering"
    summary = (
        "hierarchical clustering of few-shot errors vs coarse classes: mutual information in "
        "bits, permutation p (seed 000 §2.6, Eq. 10)"
    )
    inputs = {"errors": Artifact("fewshot", "errors")}
    arrays = ("clusters",)
    sections = ("clustering",)

    def run(self, job: Job) -> Result:
        data = io.load_npz(job.inputs["errors"])
        coarse, layers = data["class_coarse"], [str(x) for x in data["layers"]]
        probe = str(data["probe"])  # the probe set the few-shot errors were measured on
        n_clusters = len(np.unique(coarse))
        n_epochs = len(data["epochs"])
        assignments = np.zeros((n_epochs, len(layers), len(coarse)), dtype=np.int64)
        correspondence = np.zeros((n_epochs, len(layers), n_clusters, n_clusters), dtype=np.int64)
        linkages = np.zeros((n_epochs, len(layers), len(coarse) - 1, 4))
        rows = []
        for e, epoch in enumerate(int(x) for x in data["epochs"]):
            mi = {}
            for li, layer in enumerate(layers):
                linkages[e, li] = linkage_matrix(
                    error_dissimilarity(data["errors"][e, li]), self.settings["linkage"]
                )
                labels = assignments[e, li] = cut_linkage(linkages[e, li], n_clusters)
                correspondence[e, li] = correspondence_matrix(labels, coarse)[0]
                mi[layer] = mutual_information_bits(labels, coarse)
                rows += [(epoch, layer, probe, m, v) for m, v in self._measures(labels, coarse)]
            best = max(mi, key=mi.get)
            rows.append((epoch, best, probe, "best_layer_mi_bits", mi[best]))
            job.log(f"clustering epoch {epoch}: best layer {best} ({mi[best]:.3f} bits)")
        keep = ("epochs", "layers", "class_names", "class_coarse", "coarse_names")
        arrays = {
            "clusters": assignments,
            "correspondence": correspondence,
            "linkage": linkages,
            **{k: data[k] for k in keep},
        }
        return Result(rows, {"clusters": arrays})

    def _measures(self, labels: np.ndarray, coarse: np.ndarray) -> list[tuple[str, float]]:
        found = [
            ("mi_bits", mutual_information_bits(labels, coarse)),
            ("nmi", normalised_mutual_information(labels, coarse)),
        ]
        if self.settings["permutations"]:
            p = mi_permutation_pvalue(
                labels, coarse, self.settings["permutations"], seed=self.settings["seed"]
            )
            found.append(("mi_pvalue", p))
        return found
