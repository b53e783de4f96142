"""Multi-dimensional scaling of the embedding at chosen epochs (seed paper 003, Fig. 1d).

Seed 003 visualises a network's embedding by metric MDS (scikit-learn's SMACOF): points in
the plane whose distances match the images' dissimilarities as closely as possible (least
squares "stress"). Here, on the known-class probe set:

- images: `mds.n_images` drawn class-balanced (seeded) from the probe (MDS is quadratic in
  the images in memory and time), the same images at every epoch and layer;
- dissimilarity: `cosine` (default; the Euclidean distance between unit-normalised features,
  sqrt(2 − 2 cos), a metric that orders pairs as the cosine similarity of Fig. 1b does) or
  `euclidean` (raw features);
- epochs: `mds.epochs` (null = the run's first and last analysed epoch), layers:
  `mds.layers` (null = the backbone output, the last layer outside the head).

The table holds SMACOF's raw stress and Kruskal's stress-1,
sqrt(Σ (δ_ij − d_ij)² / Σ δ_ij²) over pairs (0 = distances reproduced exactly); the array
`embedding` [epoch, layer, image, 2] the coordinates, with the images' labels.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, layer_names
from ssltrace.analysis.filters import chosen


def dissimilarities(features: np.ndarray, kind: str = "cosine") -> np.ndarray:
    """Square [n, n] dissimilarity matrix of the rows of `features`."""
    from scipy.spatial.distance import pdist, squareform

    x = np.asarray(features, dtype=np.float64)
    if kind == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    elif kind != "euclidean":
        raise ValueError(f"dissimilarity must be 'cosine' or 'euclidean', got {kind!r}")
    return squareform(pdist(x))


def mds_embedding(
    delta: np.ndarray, n_components: int = 2, max_iter: int = 300, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """Metric MDS of a precomputed dissimilarity matrix (scikit-learn), started from
    classical MDS where scikit-learn offers it (>= 1.8; before, the best of 4 random starts).
    Returns (coordinates [n, n_components], raw stress, Kruskal stress-1)."""
    from sklearn.manifold import MDS

    params = inspect.signature(MDS).parameters
    options = {"n_components": n_components, "max_iter": max_iter, "random_state": seed}
    if "metric_mds" in params:  # scikit-learn >= 1.8 renamed the arguments
        options |= {"metric_mds": True, "metric": "precomputed", "init": "classical_mds"}
    else:
        options |= {"metric": True, "dissimilarity": "precomputed", "n_init": 4}
    model = MDS(**options)
    coords = model.fit_transform(delta)
    return coords, float(model.stress_), kruskal_stress(delta, coords)


def kruskal_stress(delta: np.ndarray, coords: np.ndarray) -> float:
    """sqrt(Σ (δ_ij − d_ij)² / Σ δ_ij²) over pairs i < j."""
    from scipy.spatial.distance import pdist, squareform

    target, found = squareform(delta, checks=False), pdist(coords)
    return float(np.sqrt(((target - found) ** 2).sum() / (target**2).sum()))


def balanced_subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `n` images spread evenly over the labels (all when n is None or
    at least the number of images)."""
    labels = np.asarray(labels)
    if n is None or n >= labels.size:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.size)
    # round-robin over classes in a random order: the k-th image of every class before any
    # class's (k+1)-th
    rank = np.empty(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(members.size)
    picked = order[np.lexsort((rng.random(labels.size), rank[order]))][:n]
    return np.sort(picked)


def backbone_output(layers: list[str]) -> str:
    """The last layer outside the head (head layers are named head_*)."""
    body = [layer for layer in layers if not layer.startswith("head_")]
    return (body or layers)[-1]


@ANALYSES.register("mds")
class Mds(PerEpochAnalysis):
    """MDS of the known-class probe's embedding (seed 003 Fig. 1d) at chosen epochs/layers."""

    name = "mds"
    summary = "metric MDS of the embedding at chosen epochs, with its stress (seed 003 Fig. 1d)"
    inputs = {"known": Activations("known")}
    arrays = ("embedding",)
    stacked = "embedding"
    sections = ("mds",)
    resources = {"mem_mb": 8000, "runtime": 60}

    def cache_settings(self):
        keys = ("layers", "n_images", "dissimilarity", "max_iter", "seed")
        return {key: self.settings[key] for key in keys}

    def run(self, job):
        epochs = chosen(self.settings["epochs"], list(job.epochs), "mds.epochs")
        return super().run(dataclasses.replace(job, epochs=epochs))

    def _layers(self, acts) -> list[str]:
        available = layer_names(acts)
        wanted = self.settings["layers"] or [backbone_output(available)]
        missing = [layer for layer in wanted if layer not in available]
        if missing:
            raise ValueError(
                f"config key 'mds.layers': layer {missing[0]!r} is not extracted; "
                f"extracted: {', '.join(available)}"
            )
        return list(wanted)

    def epoch(self, role, acts):
        s = self.settings
        index = balanced_subset(acts["labels"], s["n_images"], s["seed"])
        rows, coords = [], []
        layers = self._layers(acts)
        for layer in layers:
            delta = dissimilarities(acts[layer][index], s["dissimilarity"])
            xy, stress, kruskal = mds_embedding(delta, 2, s["max_iter"], s["seed"])
            coords.append(xy)
            rows += [(layer, "fine", "stress", stress), (layer, "fine", "kruskal_stress", kruskal)]
        arrays = {
            "embedding": np.stack(coords).astype(np.float32),
            "layers": np.array(layers),
            "index": index,
            "labels": acts["labels"][index],
            "coarse": acts["coarse"][index],
            "class_names": acts["class_names"],
            "coarse_names": acts["coarse_names"],
        }
        return rows, arrays
