"""Behavioural consistency of a model's image-level choices with humans (seed 003 Fig. 4b-d,
Methods "Human Behavior Consistence Metric"; Rajalingham et al. 2018, J. Neurosci.).

Model behaviour: a linear classifier on a layer (the seed: the penultimate layer), trained on
the behaviour set's training images, gives class probabilities on held-out images
(`model_probabilities`: a given train/held-out split, or K-fold cross-prediction so every
image is held out once). Human behaviour: per-image choice counts (CIFAR-10H: ~50 people per
CIFAR-10 test image; the project's `human` probe's `human_counts`).

Both become the same image-by-distractor matrix, the I2n of Rajalingham et al. (`i2n`), and
consistency is their Pearson correlation divided by the square root of the human split-half
reliability (the seed), and also by the model's own (Rajalingham's noise-adjusted
correlation, `Consistency.consistency_both`).

Difference from the seed (which used 2-AFC trials of 24 objects): here choices are n-way
(CIFAR-10H's 10-way); the two-alternative rates are derived from them by Luce's choice rule
(see `i2n`), which is what Brain-Score does with a model's class probabilities.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, ProbeFile, layer_names
from ssltrace.analysis.predictivity import pearson_columns

COUNT_PSEUDOCOUNT = 0.5  # added to choice counts before rates (Hautus 1995; see `i2n`)


# ----------------------------------------------------------------------------- model behaviour
def model_probabilities(
    features,
    labels,
    n_classes: int | None = None,
    train=None,
    n_folds: int = 10,
    C: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Class probabilities [n, K] of a linear classifier on held-out images.

    Multinomial logistic regression (scikit-learn, L2, inverse strength `C`) on standardised
    features. With `train` (bool [n]) it is fitted on those images and the other rows get
    probabilities (training rows are NaN), as the seed's 2160/240 split; without, each of
    `n_folds` stratified folds is predicted by a classifier fitted on the others.
    """
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    labels = np.asarray(labels)
    k = int(n_classes or labels.max() + 1)
    out = np.full((len(x), k), np.nan)
    if train is not None:
        train = np.asarray(train, dtype=bool)
        out[~train] = _fit_predict(x[train], labels[train], x[~train], k, C)
        return out
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, labels)
    for tr, te in folds:
        out[te] = _fit_predict(x[tr], labels[tr], x[te], k, C)
    return out


def _fit_predict(x_tr, y_tr, x_te, n_classes: int, C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    model.fit(x_tr, y_tr)
    out = np.zeros((len(x_te), n_classes))
    out[:, model.classes_] = model.predict_proba(x_te)  # classes absent from training: 0
    return out


# ----------------------------------------------------------------------------- the I2n metric
def i2n(choices, labels, cap: float = 5.0, pseudocount: float = 0.0) -> np.ndarray:
    """Normalised image-level one-vs-other d' (Rajalingham et al. 2018, "I2n") [n, K].

    `choices` [n, K] are per-image choice counts or probabilities over K classes; `labels`
    the true class of each image. For image i of class t and distractor j != t:

    - hit rate HR[i, j] = p[i, t] / (p[i, t] + p[i, j]): the probability of the right answer
      in a two-alternative (t vs j) task, from the n-way choices by Luce's choice rule;
    - false-alarm rate FAR[t, j] = mean over images k of class j of (1 - HR[k, t]): how
      often class-j images are called t when t is the distractor;
    - d'[i, j] = Z(HR) - Z(FAR), Z the inverse normal CDF clipped to +-`cap`, d' clipped
      to +-`cap` (Brain-Score caps d' at 5);
    - normalisation ("n"): the mean d'[., j] over the images of class t is subtracted, so
      only image-level differences within a class remain, not class-level accuracy.

    `pseudocount` is added to every count first: 0.5 for choice counts (the log-linear rule
    of Hautus 1995, a named addition to the seed's recipe: with ~25-50 choices per image most
    rates are 0 or 1, whose clipped Z scores made the split-half correction undershoot the
    planted consistency by ~10% in tests/test_behaviour.py, ~3% with it); 0 for probabilities.
    The true-class column is NaN, as is HR where p[i, t] + p[i, j] = 0 (no information).
    """
    p = np.asarray(choices, dtype=np.float64) + pseudocount
    labels = np.asarray(labels)
    n, k = p.shape
    rows = np.arange(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        hit = p[rows, labels][:, None] / (p[rows, labels][:, None] + p)
    hit[rows, labels] = np.nan
    # far[t, j]: mean over images of class j of 1 - hit[., t]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class without images: NaN
        far = np.stack([np.nanmean(1 - hit[labels == j], axis=0) for j in range(k)], axis=1)
        dprime = np.clip(_z(hit, cap) - _z(far[labels], cap), -cap, cap)
        class_mean = np.stack([np.nanmean(dprime[labels == c], axis=0) for c in range(k)])
    return dprime - class_mean[labels]


def _z(rate: np.ndarray, cap: float) -> np.ndarray:
    import scipy.stats

    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(scipy.stats.norm.ppf(rate), -cap, cap)


def compare_i2n(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r between the entries of two I2n matrices that are finite in both."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    return float(pearson_columns(a[keep][:, None], b[keep][:, None])[0])


# ----------------------------------------------------------------------------- reliabilities
def split_choices(counts, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each image's annotators split at random into two halves (floor and ceil of half):
    the first half's counts are a multivariate hypergeometric draw (without replacement)."""
    counts = np.asarray(counts).astype(np.int64)
    left = counts.sum(axis=1)
    want = left // 2
    first = np.zeros_like(counts)
    for c in range(counts.shape[1] - 1):  # sequential univariate hypergeometric draws
        others = left - counts[:, c]
        take = rng.hypergeometric(counts[:, c], others, want)
        first[:, c] = take
        want, left = want - take, others
    first[:, -1] = want
    return first, counts - first


def spearman_brown(r):
    """Reliability of the whole from the correlation r of two halves: 2r / (1 + r)."""
    return 2 * np.asarray(r) / (1 + np.asarray(r))


def human_reliability(
    counts, labels, n_splits: int = 100, seed: int = 0, pseudocount: float = COUNT_PSEUDOCOUNT
) -> float:
    """Split-half reliability of the human I2n: annotators of each image split at random
    (`split_choices`), I2n of each half correlated, Spearman-Brown corrected, averaged over
    `n_splits` splits (seed 003: "human split-half correlation")."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_splits):
        a, b = split_choices(counts, rng)
        values.append(spearman_brown(_compare_counts(a, b, labels, pseudocount)))
    return float(np.nanmean(values))


def model_reliability(
    probabilities,
    labels,
    trials,
    n_splits: int = 100,
    seed: int = 0,
    pseudocount: float = COUNT_PSEUDOCOUNT,
) -> float:
    """Split-half reliability of a model's I2n when it answers like an annotator pool: two
    independent halves of `trials` // 2 choices per image drawn from its probabilities
    (Rajalingham et al. 2018 sample model trials), Spearman-Brown corrected, averaged."""
    rng = np.random.default_rng(seed)
    half = np.maximum(np.asarray(trials, dtype=np.int64) // 2, 1)
    values = []
    for _ in range(n_splits):
        a, b = sample_choices(probabilities, half, rng), sample_choices(probabilities, half, rng)
        values.append(spearman_brown(_compare_counts(a, b, labels, pseudocount)))
    return float(np.nanmean(values))


def _compare_counts(a, b, labels, pseudocount: float) -> float:
    return compare_i2n(
        i2n(a, labels, pseudocount=pseudocount), i2n(b, labels, pseudocount=pseudocount)
    )


def sample_choices(probabilities, trials, rng: np.random.Generator) -> np.ndarray:
    """Choice counts [n, K]: `trials` [n] (or one number) draws per image from its probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    n = np.broadcast_to(np.asarray(trials, dtype=np.int64), (len(p),))
    return rng.multinomial(n, p)


# ----------------------------------------------------------------------------- consistency
@dataclass(frozen=True)
class Consistency:
    """Behavioural consistency of one model with humans (seed 003 Fig. 4d)."""

    r: float  # Pearson(model I2n from its probabilities, human I2n)
    human_reliability: float
    consistency: float  # r / sqrt(human reliability): the seed's measure
    r_trials: float  # Pearson(model I2n from sampled trials, human I2n), mean over draws
    model_reliability: float
    consistency_both: float  # r_trials / sqrt(human x model reliability) (Rajalingham 2018)
    n_images: int

    def rows(self) -> list[tuple[str, float]]:
        """(metric, value) pairs for a tidy table."""
        names = ("r", "human_reliability", "consistency", "r_trials", "model_reliability")
        names += ("consistency_both", "n_images")
        return [(f"behaviour_{n}", float(getattr(self, n))) for n in names]


def behavioural_consistency(
    model_probs,
    human_counts,
    labels,
    n_splits: int = 100,
    trials=None,
    seed: int = 0,
    pseudocount: float = COUNT_PSEUDOCOUNT,
    human_rel: float | None = None,
) -> Consistency:
    """Consistency of model choice probabilities with human choice counts on the same images.

    Rows of `model_probs` with NaN (e.g. the classifier's training images) are left out.
    `trials`: choices per image sampled from the model for its reliability and `r_trials`
    (default: each image's number of human annotators). `human_rel`: the human reliability
    of these images when already computed (it depends on the humans only: compute it once per
    dataset with `human_reliability`, not per epoch).
    """
    probs = np.asarray(model_probs, dtype=np.float64)
    counts = np.asarray(human_counts, dtype=np.float64)
    labels = np.asarray(labels)
    _check(probs, counts, labels)
    keep = np.isfinite(probs).all(axis=1)
    probs, counts, labels = probs[keep], counts[keep], labels[keep]
    trials = counts.sum(axis=1) if trials is None else np.broadcast_to(trials, len(probs))
    human = i2n(counts, labels, pseudocount=pseudocount)
    rho_h = human_rel
    if rho_h is None:
        rho_h = human_reliability(counts, labels, n_splits, seed, pseudocount)
    rho_m = model_reliability(probs, labels, trials, n_splits, seed + 1, pseudocount)
    r = compare_i2n(i2n(probs, labels), human)
    rng = np.random.default_rng(seed + 2)
    draws = [sample_choices(probs, trials, rng) for _ in range(max(1, n_splits // 10))]
    r_trials = float(
        np.mean([compare_i2n(i2n(d, labels, pseudocount=pseudocount), human) for d in draws])
    )
    return Consistency(
        r=r,
        human_reliability=rho_h,
        consistency=_corrected(r, rho_h),
        r_trials=r_trials,
        model_reliability=rho_m,
        consistency_both=_corrected(r_trials, rho_h * rho_m),
        n_images=int(keep.sum()),
    )


def _corrected(r: float, reliability: float) -> float:
    return float(r / np.sqrt(reliability)) if reliability > 0 else float("nan")


def _check(probs: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> None:
    if probs.ndim != 2 or probs.shape != counts.shape:
        raise ValueError(
            f"model_probs {probs.shape} and human_counts {counts.shape} must both be [n, K]"
        )
    if labels.shape != (len(probs),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be int [{len(probs)}], got {labels.dtype} {labels.shape}")
    if counts.min() < 0 or not np.isfinite(counts).all():
        raise ValueError("human_counts must be finite and non-negative")
    missing = set(range(probs.shape[1])) - set(labels[np.isfinite(probs).all(axis=1)].tolist())
    if missing:
        raise ValueError(f"classes {sorted(missing)} have no held-out image; I2n needs each")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if np.nanmin(probs) < 0:
            raise ValueError("model_probs must be non-negative")


# ----------------------------------------------------------------------------- pipeline analysis
def penultimate_layer(layers) -> str:
    """The layer before the method's head (`head_fc1`): the backbone's output, which the seed's
    linear classifier reads; the last layer when there is no head."""
    layers = list(layers)
    return layers[layers.index("head_fc1") - 1] if "head_fc1" in layers[1:] else layers[-1]


@dataclass(frozen=True)
class BehaviourSet:
    """Images of one behaviour set within a probe set's activations, with their choices."""

    name: str
    role: str
    mask: np.ndarray  # bool over the probe's images
    counts: np.ndarray  # [n, K] human choice counts
    labels: np.ndarray  # [n] true class
    reliability: float  # human split-half reliability (computed once)


@ANALYSES.register("behaviour")
class Behaviour(PerEpochAnalysis):
    """Behavioural consistency with humans per epoch and layer (seed 003 Fig. 4d, ED Fig. 8).

    For the `human` probe set (CIFAR-10H choice counts on CIFAR-10 test images) and every
    behaviour dataset of the `neural` probe set: a logistic classifier on the layer
    (`behaviour.layers`, default the penultimate) predicts each image in K-fold
    cross-prediction; the probabilities' I2n is correlated with the humans' and divided by
    the square root of the human split-half reliability (`behaviour_consistency`, the seed),
    and also by both reliabilities (`behaviour_consistency_both`). Probe column = set name.
    """

    name = "behaviour"
    summary = (
        "behavioural consistency (I2n vs human choices / sqrt human split-half reliability) "
        "on CIFAR-10H and user behaviour sets (seed 003 Methods, Fig. 4d)"
    )
    inputs = {
        "human": Activations("human"),
        "human_probe": ProbeFile("human"),
        "neural": Activations("neural"),
        "neural_probe": ProbeFile("neural"),
    }
    arrays = ()
    sections = ("behaviour",)
    resources = {"mem_mb": 8000, "runtime": 120}

    def prepare(self, job):
        from ssltrace import io
        from ssltrace.data.neural import block_arrays

        self.probe_paths = {
            "human": job.inputs["human_probe"],
            "neural": job.inputs["neural_probe"],
        }
        human = io.load_npz(job.inputs["human_probe"])
        self.sets = [self._set("human", "human", np.ones(len(human["labels"]), bool), human)]
        neural = io.load_npz(job.inputs["neural_probe"])
        for b, kind in enumerate(neural["block_kind"].astype(str)):
            if kind == "behaviour":
                mask = neural["labels"] == b
                name = str(neural["class_names"][b])
                self.sets.append(self._set(name, "neural", mask, block_arrays(neural, b)))

    def _set(self, name, role, mask, arrays) -> BehaviourSet:
        counts = np.asarray(arrays["human_counts"], dtype=np.float64)
        labels = np.asarray(arrays["labels"], dtype=np.int64)
        s = self.settings
        rel = human_reliability(counts, labels, s["splits"], s["seed"])
        return BehaviourSet(name, role, mask, counts, labels, rel)

    def roles(self):
        return list(dict.fromkeys(s.role for s in self.sets))

    def cache_settings(self):
        from ssltrace.store import file_digest

        # the probe files hold the choice counts compared with
        digests = [file_digest(self.probe_paths[role]) for role in ("human", "neural")]
        return {**self.settings, "probes": digests}

    def epoch(self, role, acts):
        layers = self.settings.get("layers") or [penultimate_layer(layer_names(acts))]
        rows = []
        for bset in (s for s in self.sets if s.role == role):
            for layer in layers:
                found = self._consistency(acts[layer][bset.mask], bset)
                rows += [(layer, bset.name, metric, value) for metric, value in found.rows()]
        return rows, {}

    def _consistency(self, features, bset: BehaviourSet) -> Consistency:
        s = self.settings
        smallest = int(np.bincount(bset.labels).min())
        folds = max(2, min(int(s["folds"]), smallest))
        probs = model_probabilities(
            features, bset.labels, bset.counts.shape[1], None, folds, s["C"], s["seed"]
        )
        return behavioural_consistency(
            probs,
            bset.counts,
            bset.labels,
            n_splits=s["splits"],
            seed=s["seed"],
            human_rel=bset.reliability,
        )
