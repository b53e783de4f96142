"""UMAP views of the sample, fine and coarse levels before and after training (seed 004 Fig. 1).

Seed 004 shows UMAP (McInnes et al. 2018, umap-learn) embeddings of training samples of five
source images (their augmentations), five classes and five superclasses, at initialisation and
after training. Per level, `umap.groups` groups are drawn once (seeded, the same for both
epochs): source images of the sample probe set, fine classes and coarse classes of the known
probe set; their training-part points (`part` 0) at layer `umap.layer` (null = the backbone
output, the layer before the head's) are embedded in 2-D with a fixed random state, at the
run's first and last analysed epochs.

Matrix file `embeddings`: `coords` float [N, 2] with per point `point_epoch`, `level`,
`group` (index into that level's groups) and `group_name`; `layer` names the embedded layer.
Rows quantify what the picture shows, per epoch and level: `umap_silhouette` (silhouette of
the groups in the 2-D embedding, sklearn) and `umap_trustworthiness` (how well the embedding
keeps the layer's `umap.n_neighbors` neighbourhoods, sklearn.manifold.trustworthiness;
1 = perfectly).
"""

from __future__ import annotations

import numpy as np

from ssltrace import layout
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, Result, layer_names, per_epoch

# Per-point arrays of the matrix file (the per-epoch `epoch` key is the cache's own).
POINT_KEYS = ("coords", "level", "group", "group_name", "point_epoch")
# Label level -> (activation role, label array naming its groups).
LEVELS = {
    "sample": ("sample", "labels"),
    "fine": ("known", "labels"),
    "coarse": ("known", "coarse"),
}


def umap_embedding(
    x: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> np.ndarray:
    """2-D UMAP embedding of the rows of x (umap-learn, fixed random state: reproducible)."""
    import umap  # numba compiles on import: only jobs that embed pay for it

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"UMAP needs a 2-D array of at least 3 points, got shape {x.shape}")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, x.shape[0] - 1),
        min_dist=min_dist,
        random_state=seed,
        # Sparse-free small inputs: the spectral initialisation of umap-learn's default.
        init="spectral",
        n_jobs=1,  # a fixed random_state runs single-threaded anyway; say so, no warning
    )
    return reducer.fit_transform(x).astype(np.float32)


def pick_groups(labels: np.ndarray, n_groups: int, seed: int) -> np.ndarray:
    """`n_groups` distinct label values, drawn with `seed` (all of them if fewer), sorted."""
    values = np.unique(labels)
    if values.size <= n_groups:
        return values
    return np.sort(np.random.default_rng(seed).choice(values, n_groups, replace=False))


@ANALYSES.register("umap")
class Umap(PerEpochAnalysis):
    """UMAP of the sample, fine and coarse levels at the first and last analysed epoch."""

    name = "umap"
    summary = "UMAP of sample, fine and coarse levels before and after training (seed 004 Fig. 1)"
    inputs = {"known": Activations("known"), "sample": Activations("sample")}
    arrays = ("embeddings",)
    sections = ("umap",)
    resources = {"mem_mb": 8000, "runtime": 60}

    def roles(self):
        wanted = {LEVELS[level][0] for level in self.settings["levels"]}
        return [role for role in ("known", "sample") if role in wanted]

    def run(self, job):
        epochs = sorted({job.epochs[0], job.epochs[-1]})
        results = [
            result
            for role in self.roles()
            for result in per_epoch(self, role, _files(job, role, epochs), job)
        ]
        rows = [(r.epoch, *row) for r in results for row in r.rows]
        parts = [r.arrays for r in results]
        arrays = {key: np.concatenate([p[key] for p in parts]) for key in POINT_KEYS}
        arrays["layer"] = np.array(self._layer_name(results))
        return Result(rows, {"embeddings": arrays})

    def epoch(self, role, acts):
        layer = self._layer(acts)
        train = acts["part"] == 0
        rows, pieces = [], []
        for level in self.settings["levels"]:
            if LEVELS[level][0] != role:
                continue
            labels = np.asarray(acts[LEVELS[level][1]])[train]
            x = np.asarray(acts[layer])[train]
            chosen = pick_groups(labels, self.settings["groups"], self.settings["seed"])
            keep = np.isin(labels, chosen)
            coords = umap_embedding(
                x[keep],
                self.settings["n_neighbors"],
                self.settings["min_dist"],
                self.settings["seed"],
            )
            group = np.searchsorted(chosen, labels[keep])
            rows += _scores(layer, level, x[keep], coords, group, self.settings["n_neighbors"])
            pieces.append((level, coords, group, self._names(acts, level, chosen)[group]))
        return rows, _arrays(pieces, int(acts["epoch"]))

    @staticmethod
    def _layer_name(results) -> str:
        return next((r.rows[0][0] for r in results if r.rows), "")

    def _layer(self, acts) -> str:
        layers = layer_names(acts)
        wanted = self.settings.get("layer") or layers[max(len(layers) - 2, 0)]
        if wanted not in layers:
            raise ValueError(
                f"config key 'umap.layer': {wanted!r} was not extracted; "
                f"extracted: {', '.join(layers)}"
            )
        return wanted

    @staticmethod
    def _names(acts, level: str, chosen: np.ndarray) -> np.ndarray:
        if level == "sample":
            return np.array([f"image {int(c)}" for c in chosen])
        names = acts["coarse_names"] if level == "coarse" else acts["class_names"]
        return np.asarray(names).astype(str)[chosen]


def _files(job, role, epochs):
    return layout.epoch_files(job.inputs[role], epochs)


def _scores(layer, level, x, coords, group, n_neighbors):
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_score

    out = []
    if np.unique(group).size > 1:
        out.append((layer, level, "umap_silhouette", float(silhouette_score(coords, group))))
    k = max(1, min(n_neighbors, (x.shape[0] - 1) // 2 - 1))
    out.append(
        (layer, level, "umap_trustworthiness", float(trustworthiness(x, coords, n_neighbors=k)))
    )
    return out


def _arrays(pieces, epoch: int) -> dict[str, np.ndarray]:
    if not pieces:
        empty = np.zeros(0, dtype=np.int64)
        return {
            "coords": np.zeros((0, 2), np.float32),
            "level": empty.astype(str),
            "group": empty,
            "group_name": empty.astype(str),
            "point_epoch": empty,
        }
    return {
        "coords": np.concatenate([p[1] for p in pieces]),
        "level": np.concatenate([np.full(len(p[2]), p[0]) for p in pieces]),
        "group": np.concatenate([p[2] for p in pieces]).astype(np.int64),
        "group_name": np.concatenate([p[3] for p in pieces]),
        "point_epoch": np.full(sum(len(p[2]) for p in pieces), epoch, dtype=np.int64),
    }
