"""Few-shot prototype learning on frozen features (seed paper 000, §2.4).

For a pair of classes (a, b), m "shots" are drawn from each class and averaged into a
prototype; every remaining sample of class a is a test sample, and the m-shot error
E[a, b] is the fraction of them that lie nearer to prototype b than to prototype a.
Averaging over random draws ("trials") gives the pairwise error matrix whose mean
off-diagonal value is the layer-wise few-shot error of seed 000, Fig. 5.

Two measures, each on drawn shots or on a given `ShotPlan` (`plan=`):
`pairwise_prototype_errors` (the matrix E) and `prototype_confusion` (nearest of all C
prototypes); `mean_offdiagonal` reduces E to the layer-wise error. `FewShot` is the pipeline
analysis applying E to every epoch and layer of a run's novel-class probe set.

Conventions (the same in the fast kernel and in the plain reference loop):

- Shots are drawn per trial and class uniformly without replacement (`draw_shots`); a class's
  test samples are all its other samples, so shots never serve as test samples.
- A test sample at exactly the same distance from both prototypes counts as half an error
  (ties are decided on the floating-point distances; they occur in practice only for
  duplicated or degenerate features, e.g. an all-zero sample under the cosine distance).
- The diagonal E[a, a] is 0 (a class is not confused with itself): 0 rather than NaN so the
  matrix can be summed and plotted directly.
- 'sqeuclidean': ||x - p||²; 'cosine': 1 - cos(x, p) with the prototype the mean of the raw
  shot features (an all-zero vector has cosine similarity 0 to everything).
- Rows and columns follow the sorted unique labels (`np.unique(labels)`).

The computation, float32 matrix products with a rigorous float64 recheck of near-ties, is in
`fewshot_kernel`, with the references tests and benchmarks validate it against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, layer_names
from ssltrace.analysis.fewshot_kernel import DISTANCES, errors_from_signs, mean_weights

__all__ = [
    "DISTANCES",
    "FewShot",
    "ShotPlan",
    "draw_shots",
    "mean_offdiagonal",
    "pairwise_prototype_errors",
    "prototype_confusion",
    "shot_arguments",
]

# Defaults of the shot-drawing arguments, which a call with `plan=` leaves as they are.
_DRAW_DEFAULTS = {"shots": 5, "trials": 100, "max_per_class": None, "seed": 0}


@dataclass(frozen=True, eq=False)
class ShotPlan:
    """Which samples take part and which are shots, for every trial.

    Attributes:
        classes: [C] the label value of each class (row/column order of the results).
        rows: [n'] indices into `features` of the samples taking part (after any per-class
            cap; `draw_shots` groups them by class).
        class_index: [n'] class index 0..C-1 of each of those samples.
        shots: int [T, C, m] positions into `rows` of the shots of class c in trial t; all
            other samples of the class are its test samples in that trial.
    """

    classes: np.ndarray
    rows: np.ndarray
    class_index: np.ndarray
    shots: np.ndarray

    def __post_init__(self) -> None:
        for name in ("classes", "rows", "class_index", "shots"):
            object.__setattr__(self, name, np.asarray(getattr(self, name)))
        if self.shots.ndim != 3 or self.shots.shape[1] != len(self.classes):
            raise ValueError(
                f"shots must be int [trials, {len(self.classes)} classes, m], "
                f"got shape {self.shots.shape}"
            )
        if len(self.rows) != len(self.class_index):
            raise ValueError("rows and class_index must have the same length")
        pos = self.shots
        if pos.size and (pos.min() < 0 or pos.max() >= len(self.rows)):
            raise ValueError(f"shots must be positions 0..{len(self.rows) - 1} into rows")
        wanted = np.arange(len(self.classes))[None, :, None]
        if not np.all(self.class_index[pos] == wanted):
            raise ValueError("shots[t, c] must all be samples of class c")
        ordered = np.sort(pos, axis=2)
        if np.any(ordered[..., 1:] == ordered[..., :-1]):
            raise ValueError("shots[t, c] must be distinct (drawn without replacement)")
        _check_tests_left(self.n_shots, self.class_sizes, "")

    @property
    def n_shots(self) -> int:
        return self.shots.shape[2]

    @property
    def n_trials(self) -> int:
        return self.shots.shape[0]

    @property
    def class_sizes(self) -> np.ndarray:
        return np.bincount(self.class_index, minlength=len(self.classes))

    def test_positions(self, trial: int, c: int) -> np.ndarray:
        """Positions into `rows` of the test samples of class c in a trial (all non-shots)."""
        members = np.flatnonzero(self.class_index == c)
        return np.setdiff1d(members, self.shots[trial, c])


def draw_shots(
    labels,
    shots: int,
    trials: int,
    max_per_class: int | None = None,
    seed: int | np.random.Generator = 0,
) -> ShotPlan:
    """Seeded draw of `shots` samples per class and trial, uniformly without replacement.

    With `max_per_class`, a seeded subset of at most that many samples per class is taken
    first (once, for all trials); the samples left out are neither shots nor test samples.
    """
    labels = _check_labels(labels, None)
    _check_count("shots", shots)
    _check_count("trials", trials)
    if max_per_class is not None:
        _check_count("max_per_class", max_per_class)
    classes, class_of = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {len(classes)}")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(class_of == c) for c in range(len(classes))]
    if max_per_class is not None:
        members = [_subset(m, max_per_class, rng) for m in members]
    sizes = np.array([len(m) for m in members])
    _check_tests_left(
        shots, sizes, "" if max_per_class is None else f" (max_per_class={max_per_class})"
    )
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    plan_shots = np.empty((trials, len(classes), shots), dtype=np.int64)
    for c, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        order = rng.permuted(np.tile(np.arange(size), (trials, 1)), axis=1)
        plan_shots[:, c] = start + order[:, :shots]
    return ShotPlan(
        classes=classes,
        rows=np.concatenate(members),
        class_index=np.repeat(np.arange(len(classes)), sizes),
        shots=plan_shots,
    )


def pairwise_prototype_errors(
    features,
    labels=None,
    shots: int = 5,
    trials: int = 100,
    distance: str = "sqeuclidean",
    max_per_class: int | None = None,
    seed: int | np.random.Generator = 0,
    device: str | torch.device = "auto",
    plan: ShotPlan | None = None,
) -> np.ndarray:
    """Pairwise m-shot prototype error matrix E [C, C] (see the module docstring).

    Args:
        features: float [n, d] (numpy or torch), one row per sample.
        labels: int [n] class of each sample; results follow `np.unique(labels)`. May be
            left out with `plan`; if given, it must agree with the plan.
        shots: m, shots per class and trial; must be below every class's sample count.
        trials: number of random draws averaged.
        distance: 'sqeuclidean' or 'cosine'.
        max_per_class: use a seeded subset of at most this many samples per class.
        seed: int or np.random.Generator for the draws.
        device: 'auto' (CUDA when present), 'cpu', 'cuda', ...
        plan: given shots (a `ShotPlan`, from `draw_shots` or by hand) instead of drawing
            them; then `max_per_class` and `seed` must be left out, and `shots` and `trials`
            left out or equal to the plan's (ValueError otherwise).

    Returns:
        float64 [C, C]: E[a, b] = mean over trials of the fraction of class-a test samples
        nearer prototype b than prototype a (ties count half); diagonal 0.
    """
    draw = dict(shots=shots, trials=trials, max_per_class=max_per_class, seed=seed)
    x, plan = _features_and_plan(features, labels, distance, draw, plan)
    return errors_from_signs(mean_weights(x, plan, distance, device, "sign"))


def prototype_confusion(
    features,
    labels=None,
    shots: int = 5,
    trials: int = 100,
    distance: str = "sqeuclidean",
    max_per_class: int | None = None,
    seed: int | np.random.Generator = 0,
    device: str | torch.device = "auto",
    plan: ShotPlan | None = None,
) -> np.ndarray:
    """Confusion matrix [C, C] of m-shot nearest-prototype classification among all classes.

    Each test sample is assigned to the nearest of all C prototypes (a tie between k
    prototypes gives 1/k to each); row a holds the fraction of class-a test samples assigned
    to each class, averaged over trials, so every row sums to 1. The arguments are those of
    `pairwise_prototype_errors`, and so are the shots drawn with the same ones.
    """
    draw = dict(shots=shots, trials=trials, max_per_class=max_per_class, seed=seed)
    x, plan = _features_and_plan(features, labels, distance, draw, plan)
    return mean_weights(x, plan, distance, device, "nearest")


def _features_and_plan(
    features, labels, distance: str, draw: dict, plan: ShotPlan | None
) -> tuple[torch.Tensor, ShotPlan]:
    """Checked features and their shots, drawn with the arguments `draw` of `draw_shots` or
    the given `plan`: both measures go through here, so they see the same shots."""
    x = _check_features(features, distance)
    if plan is None:
        if labels is None:
            raise ValueError("labels must be given unless plan is")
        return x, draw_shots(_check_labels(labels, len(x)), **draw)
    _check_plan(plan, x, labels, draw)
    return x, plan


def _check_plan(plan: ShotPlan, x: torch.Tensor, labels, draw: dict) -> None:
    """A given plan must fit the features (and labels, if given), and no drawing argument may
    say otherwise than the plan: a value left at its default says nothing."""
    if not isinstance(plan, ShotPlan):
        raise ValueError(f"plan must be a ShotPlan (see draw_shots), got {type(plan).__name__}")
    planned = {"shots": plan.n_shots, "trials": plan.n_trials}
    for name, value in draw.items():
        if _is_default(name, value) or planned.get(name) == value:
            continue
        fixed = f"the plan has {planned[name]}" if name in planned else "the plan fixes the draw"
        raise ValueError(f"{name}={value!r} was given with plan, but {fixed}; leave {name} out")
    if plan.rows.max() >= len(x):
        raise ValueError(f"plan.rows index samples beyond the {len(x)} rows of features")
    if labels is not None:
        labels = _check_labels(labels, len(x))
        if not np.array_equal(labels[plan.rows], plan.classes[plan.class_index]):
            raise ValueError("labels disagree with plan: labels[plan.rows] != plan's classes")


def _is_default(name: str, value) -> bool:
    default = _DRAW_DEFAULTS[name]
    if default is None or isinstance(value, np.random.Generator):
        return value is default
    return isinstance(value, (int, np.integer)) and value == default


def mean_offdiagonal(matrix) -> float:
    """Mean of the off-diagonal entries of a square matrix (the layer-wise error, Fig. 5)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"matrix must be square [C, C] with C >= 2, got shape {m.shape}")
    return float(m[~np.eye(len(m), dtype=bool)].mean())


def _subset(members: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if len(members) <= cap:
        return members
    return np.sort(rng.choice(members, size=cap, replace=False))


def _check_tests_left(shots: int, sizes: np.ndarray, note: str) -> None:
    if shots >= sizes.min():
        raise ValueError(
            f"shots={shots} leaves no test samples: the smallest class has {sizes.min()} "
            f"samples{note}; shots must be smaller than that"
        )


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_features(features, distance: str) -> torch.Tensor:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    x = torch.as_tensor(features)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must be a float array [n, d], got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"features must be numeric, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("features contain NaN or infinite values")
    return x


def _check_labels(labels, n: int | None) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an int array [n], got shape {labels.shape} dtype {labels.dtype}"
        )
    if n is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but features has {n} rows")
    return labels


def shot_arguments(settings: dict) -> dict:
    """The shot-draw, distance and device arguments of the two measures, from the settings of
    an analysis (the `fewshot` config section), so that every analysis draws alike."""
    keys = ("shots", "trials", "distance", "seed")
    return {**{k: settings[k] for k in keys}, "device": settings.get("device", "auto")}


def class_coarse(labels: np.ndarray, coarse: np.ndarray, n_classes: int) -> np.ndarray:
    """Coarse class of each class, checking that every class has exactly one."""
    out = np.empty(n_classes, dtype=np.int64)
    for c in range(n_classes):
        values = np.unique(coarse[labels == c])
        if len(values) != 1:
            raise ValueError(f"class {c} maps to coarse classes {values.tolist()}, expected one")
        out[c] = values[0]
    return out


@ANALYSES.register("fewshot")
class FewShot(PerEpochAnalysis):
    """Pairwise m-shot prototype error matrices (seed 000 §2.4) for every epoch and layer.

    Rows: `fewshot_error` (the mean off-diagonal error, Fig. 5) per layer. Array file
    `errors`: [epoch, layer, C, C] with the class names, each class's coarse class and the
    probe set's name. Settings: shots, trials, distance, seed, max_per_class, device.
    """

    name = "fewshot"
    summary = (
        "pairwise m-shot prototype errors between novel classes; layer-wise mean (seed 000 §2.4)"
    )
    inputs = {"novel": Activations("novel")}
    arrays = ("errors",)
    sections = ("fewshot",)
    resources = {"mem_mb": 8000, "runtime": 60}
    stacked = "errors"

    def epoch(self, role, acts):
        rows, mats = [], []
        for layer in layer_names(acts):
            errors = pairwise_prototype_errors(
                acts[layer],
                acts["labels"],
                max_per_class=self.settings.get("max_per_class"),
                **shot_arguments(self.settings),
            )
            mats.append(errors)
            rows.append((layer, role, "fewshot_error", mean_offdiagonal(errors)))
        return rows, {
            "errors": np.stack(mats),
            "layers": acts["layers"],
            "class_names": acts["class_names"],
            "class_coarse": class_coarse(acts["labels"], acts["coarse"], len(mats[0])),
            "coarse_names": acts["coarse_names"],
            "probe": np.array(role),
        }
