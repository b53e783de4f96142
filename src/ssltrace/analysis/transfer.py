"""Object position and pose transfer (seed paper 003, Fig. 1e; Methods, "Object position/pose
estimation").

Seed 003 regresses the position of an object's centre (horizontal and vertical) and its pose
from each layer's spatially averaged output, chooses the fitting hyper-parameters on one
image subset, reports the Pearson correlation between prediction and truth on held-out images
(averaged over the two coordinates), and picks each network's best layer on a separate set.
Here, on the `objects` probe set (`object_probe`: `ssltrace.data.synthetic.object_set`, or a
user's file), split into fit / held-out / selection parts (`part` 0 / 1 / 2):

- features: the extracted layer output (with `extract.pooling: mean`, the spatial average),
  standardised with the fit part's mean and SD;
- regression: ridge (scikit-learn `RidgeCV`), its penalty chosen among `alphas` by
  leave-one-out error on the fit part, fitted there;
- targets: position (x, y); pose, the in-plane rotation θ as (cos 2θ, sin 2θ) (an ellipse
  turned by π is the same: the doubled angle is continuous where θ wraps; the seed's rendered
  3-D objects have two rotation axes, ours one); scale (size, besides the paper);
- scores: Pearson r per target on the held-out part (probe column `heldout`) and on the
  selection part (`select`), averaged over the target's coordinates: `position_r`,
  `pose_r`, `scale_r`; and per measure the held-out r of the layer with the best selection r
  (`position_r_best`, ... in the row of that layer).
"""

from __future__ import annotations

import numpy as np

from ssltrace import io
from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, ProbeFile, layer_names

MEASURES = ("position", "pose", "scale")
PARTS = {"heldout": 1, "select": 2}


def object_probe(
    n_images: int = 2000, seed: int = 0, fractions=(0.5, 0.25, 0.25), file: str | None = None
) -> dict[str, np.ndarray]:
    """The `objects` probe set: images with `position`, `rotation`, `scale`, labels and a
    seeded random `part` (0 fit, 1 held-out, 2 selection) in the proportions `fractions`."""
    if file is None:
        from ssltrace.data.synthetic import object_set

        found = object_set(n_images, seed)
    else:
        found = _user_objects(file)
    n = len(found["images"])
    parts = split_parts(n, fractions, seed)
    labels = found.get("labels", np.zeros(n, np.int64)).astype(np.int64)
    names = np.array([f"object{k}" for k in range(int(labels.max()) + 1)])
    return {
        "images": found["images"],
        "labels": labels,
        "coarse": labels,
        "class_names": names,
        "coarse_names": names,
        "source_index": np.arange(n, dtype=np.int64),
        "part": parts,
        "position": np.asarray(found["position"], np.float64),
        "rotation": np.mod(np.asarray(found["rotation"], np.float64), np.pi),
        "scale": np.asarray(found["scale"], np.float64),
    }


def _user_objects(file: str) -> dict[str, np.ndarray]:
    found = io.load_npz(file)
    n = len(found.get("images", []))
    expected = {"images": (n,), "position": (n, 2), "rotation": (n,), "scale": (n,)}
    for key, shape in expected.items():
        value = found.get(key)
        if value is None or value.shape[: len(shape)] != shape:
            raise ValueError(
                f"probes.objects.file {file}: needs {key} of shape {shape}"
                f"{' + (H, W, 3) uint8' if key == 'images' else ''}, got "
                f"{None if value is None else value.shape}"
            )
    if found["images"].dtype != np.uint8 or found["images"].ndim != 4:
        raise ValueError(f"probes.objects.file {file}: images must be uint8 [n, H, W, 3]")
    return found


def split_parts(n: int, fractions, seed: int) -> np.ndarray:
    """Seeded part labels 0/1/2 in the proportions `fractions` (each part >= 4 images)."""
    shares = np.asarray(fractions, dtype=np.float64)
    counts = np.floor(shares / shares.sum() * n).astype(int)
    counts[0] += n - counts.sum()
    if (counts < 4).any():
        raise ValueError(f"{n} object images split {fractions} leave a part with < 4 images")
    parts = np.repeat(np.arange(3), counts)
    return np.random.default_rng([seed, 7]).permutation(parts).astype(np.int64)


def targets(probe: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Regression targets per measure [n, k] (module docstring)."""
    theta = 2 * np.asarray(probe["rotation"], np.float64)
    return {
        "position": np.asarray(probe["position"], np.float64),
        "pose": np.stack([np.cos(theta), np.sin(theta)], axis=1),
        "scale": np.asarray(probe["scale"], np.float64)[:, None],
    }


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column pair (NaN for a constant column)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=0) / denom, np.nan)


def transfer_scores(
    features: np.ndarray, parts: np.ndarray, target: np.ndarray, alphas
) -> dict[str, float]:
    """{part name: mean Pearson r over the target's columns} of a ridge fitted on part 0."""
    from sklearn.linear_model import RidgeCV

    x = np.asarray(features, dtype=np.float64)
    fit = parts == 0
    mean, sd = x[fit].mean(axis=0), x[fit].std(axis=0)
    z = (x - mean) / np.where(sd > 0, sd, 1.0)
    model = RidgeCV(alphas=np.asarray(alphas, dtype=np.float64)).fit(z[fit], target[fit])
    out = {}
    for name, part in PARTS.items():
        rows = parts == part
        out[name] = float(np.nanmean(pearson_columns(model.predict(z[rows]), target[rows])))
    return out


@ANALYSES.register("transfer")
class Transfer(PerEpochAnalysis):
    """Position/pose regression from each layer (seed 003 Fig. 1e) per epoch."""

    name = "transfer"
    summary = (
        "object position and pose regressed from spatially averaged layer outputs: held-out "
        "Pearson r, best layer on a separate split (seed 003 Fig. 1e)"
    )
    inputs = {"objects": Activations("objects"), "stimuli": ProbeFile("objects")}
    sections = ("transfer",)
    resources = {"mem_mb": 4000, "runtime": 30}

    def cache_settings(self):
        return {"alphas": list(self.settings["alphas"])}

    def prepare(self, job):
        self.targets = targets(io.load_npz(job.inputs["stimuli"]))

    def epoch(self, role, acts):
        wanted, rows, select = self.targets, [], {}
        if len(wanted["scale"]) != len(acts["part"]):
            raise ValueError(
                f"the objects probe has {len(wanted['scale'])} images, its activations "
                f"{len(acts['part'])}: extract them again"
            )
        for layer in layer_names(acts):
            for measure in MEASURES:
                scores = transfer_scores(
                    acts[layer], acts["part"], wanted[measure], self.settings["alphas"]
                )
                for part, r in scores.items():
                    rows.append((layer, part, f"{measure}_r", r))
                select[layer, measure] = scores
        for measure in MEASURES:
            best = max(layer_names(acts), key=lambda lay: _finite(select[lay, measure]["select"]))
            rows.append((best, "heldout", f"{measure}_r_best", select[best, measure]["heldout"]))
        return rows, {}


def _finite(value: float) -> float:
    return value if np.isfinite(value) else -np.inf
