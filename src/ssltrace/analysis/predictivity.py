"""Neural predictivity with noise ceilings (seed 003 Methods, "Neural response fitting
procedure"; Fig. 2b-c, Extended Data Figs. 1-3 and 11).

Array-level measures, each named after what it computes:

- `split_half_reliability(responses)`: per neuroid, the Spearman-Brown corrected correlation
  between the averages of two random halves of the repetitions, averaged over many splits (the
  seed's "cross-trial neural response correlation"; Brain-Score's `InternalConsistency`).
- `pca_scores(features)`: PCA (<= 1000 components) of a layer's flattened activations, fitted
  on the stimuli themselves (as Brain-Score reduces layers before its readouts).
- three readouts behind one cross-validation driver (`layer_predictivity`): `ridge_pca`
  (per-neuroid alpha by inner CV: scikit-learn's exact leave-one-out `RidgeCV`, the default,
  or himalaya on K stratified folds with a numpy/torch/torch_cuda backend), `pls_pca`
  (scikit-learn PLS, 25 components, Brain-Score's default) and `factorised_map` (the seed's
  spatial mask x channel mask per neuroid on the unpooled map, Klindt et al. 2017, Adam).
- per neuroid: Pearson r between held-out predictions and the repetition-averaged response
  (mean over outer folds), ceiled r / sqrt(reliability); per region: the median over its
  neuroids and a bootstrap SE over neuroids (200 resamples, as the seed) (`region_summaries`);
  between methods: paired two-tailed t-tests over neuroids (`ttest_matrix`, ED Fig. 1).

Cross-validation folds are stratified by the presentation grouping (object or category; as
Brain-Score's `stratification_coord`). With a `split` (seed 003: low/medium-variation images
choose hyper-parameters, high-variation images are reported), hyper-parameters are chosen once
on the `fit` presentations and the readout is cross-validated on the `report` ones; without it
the choice is nested inside each outer training set.

Deliberate differences from the seed, as named options: features are scaled to unit mean
squared norm per image before ridge (`scale_features`), so one alpha grid spans the same range
of shrinkage for every layer and epoch; the factorised readout has a bias per neuroid (the
seed's formula has none; responses have a mean) and chooses its L2 weight per neuroid on one
stratified hold-out of the fit presentations (`factorised_holdout`), since a K-fold search per
weight multiplies the cost of an Adam fit.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, ProbeFile

READOUTS = ("ridge_pca", "pls_pca", "factorised_map")


@dataclass(frozen=True)
class PredictivitySettings:
    """Every setting of the measures, with its default (the one table of defaults)."""

    n_components: int = 1000  # PCA components (Brain-Score: 1000)
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 5, 17))
    # ridge alpha selection: "loo" = scikit-learn's exact efficient leave-one-out (one
    # decomposition per fit shared by all alphas and neuroids; Brain-Score's RidgeCV, here per
    # neuroid), or K stratified folds with himalaya on `backend` (the GPU path). "loo" is the
    # default: per outer fold of 2400 x 1000 PCs x 256 neuroids, one CPU thread, measured
    # 1.2 CPU s vs 4.7 s (himalaya torch float32, 3 folds), 7.5 s (torch, 5 folds) and ~30x
    # (himalaya numpy, 5 folds); at 800 x 999, 0.5 s vs 0.9 s (torch, 3 folds).
    inner_folds: int | str = "loo"
    outer_folds: int = 5  # stratified folds scored
    pls_components: int = 25  # Brain-Score's default
    backend: str = "numpy"  # himalaya backend: numpy, torch, torch_cuda
    scale_features: bool = True
    ceiling_splits: int = 100
    bootstrap: int = 200  # seed 003: 200 resamples of neuroids
    seed: int = 0
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)  # factorised readout's w
    factorised_steps: int = 600
    factorised_lr: float = 0.03
    factorised_batch: int = 256
    factorised_holdout: float = 0.2
    device: str = "auto"  # torch device of the PCA Gram products and the factorised readout

    @classmethod
    def from_mapping(cls, values: Mapping) -> PredictivitySettings:
        """Settings from a config section; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown predictivity settings {unknown}; known: {sorted(known)}")
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return replace(cls(), **converted)


@dataclass(frozen=True)
class NeuroidScores:
    """Per-neuroid result of one readout on one layer."""

    readout: str
    raw: np.ndarray  # [N] Pearson r on held-out presentations (mean over outer folds)
    ceiling: np.ndarray  # [N] split-half reliability (NaN without repetitions)
    ceiled: np.ndarray  # [N] raw / sqrt(ceiling) (NaN where ceiling <= 0 or absent)
    region: np.ndarray  # [N]
    hyper: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [N] alpha or w (NaN: none)


@dataclass(frozen=True)
class RegionSummary:
    region: str
    n_neuroids: int
    raw_median: float
    ceiled_median: float
    ceiling_median: float
    se: float  # bootstrap SE of the ceiled median (of the raw median without a ceiling)
    raw_se: float


# ----------------------------------------------------------------------------- ceilings
def split_half_reliability(responses, n_splits: int = 100, seed: int = 0) -> np.ndarray:
    """Per-neuroid reliability of the repetition-averaged response (seed 003 Methods: the
    "cross-trial neural response correlation" the predictivity is divided by).

    Each split assigns, for every presentation, a random half of its available repetitions to
    A and an equal number of the rest to B (one left out when the count is odd); the
    Pearson correlation over presentations of the two half-averages is Spearman-Brown
    corrected, 2r / (1 + r), and averaged over `n_splits` splits.

    Args:
        responses: float [R, P, N], NaN where a repetition is missing; R >= 2.
    Returns: float [N]; NaN where no presentation has two repetitions.
    """
    x = np.asarray(responses, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"responses must be [repetition, presentation, neuroid], got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(
            f"responses has {x.shape[0]} repetition: split-half reliability needs >= 2 "
            "(report raw r only)"
        )
    valid = ~np.isnan(x)
    out = np.full(x.shape[2], np.nan)
    for columns in _same_missingness(valid):
        out[columns] = _split_half(x[:, :, columns], valid[:, :, columns[0]], n_splits, seed)
    return out


def _same_missingness(valid: np.ndarray) -> list[np.ndarray]:
    """Neuroid index groups sharing one pattern of present repetitions."""
    if valid.all() or (valid == valid[:, :, :1]).all():
        return [np.arange(valid.shape[2])]
    flat = valid.reshape(-1, valid.shape[2]).T
    _, inverse = np.unique(np.packbits(flat, axis=1), axis=0, return_inverse=True)
    return [np.flatnonzero(inverse.ravel() == g) for g in range(inverse.max() + 1)]


def _split_half(x: np.ndarray, valid: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_valid = valid.sum(axis=0)
    half = n_valid // 2
    usable = half > 0
    # [P, R, N] once, summed with float masks [P, R]: the same sums as a boolean mask over
    # [R, P, N], 2.7x faster (contiguous repetitions per presentation)
    values = np.ascontiguousarray(np.nan_to_num(x).transpose(1, 0, 2))
    corrected = np.zeros(x.shape[2])
    for _ in range(n_splits):
        keys = np.where(valid, rng.random(valid.shape), np.inf)
        rank = keys.argsort(axis=0).argsort(axis=0).T
        a = (rank < half[:, None]).astype(np.float64)
        b = ((rank >= half[:, None]) & (rank < 2 * half[:, None])).astype(np.float64)
        mean_a = np.einsum("pr,prn->pn", a, values)[usable] / half[usable, None]
        mean_b = np.einsum("pr,prn->pn", b, values)[usable] / half[usable, None]
        r = pearson_columns(mean_a, mean_b)
        corrected += 2 * r / (1 + r)
    return corrected / n_splits


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column of a [n, N] with the same column of b; NaN if one is constant."""
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).sum(axis=0) / np.sqrt((ac**2).sum(axis=0) * (bc**2).sum(axis=0))
    return np.clip(r, -1.0, 1.0)


def ceil_scores(raw: np.ndarray, reliability: np.ndarray | None) -> np.ndarray:
    """raw r / sqrt(reliability) per neuroid (seed 003); NaN where reliability <= 0 or absent."""
    if reliability is None:
        return np.full(np.shape(raw), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(reliability > 0, raw / np.sqrt(np.maximum(reliability, 1e-300)), np.nan)


# ----------------------------------------------------------------------------- features
def pca_scores(features, n_components: int = 1000, device="cpu") -> np.ndarray:
    """Principal-component scores [P, k] of features [P, ...] (flattened), fitted on these
    stimuli; k = min(n_components, P - 1, D) less any zero-variance directions.

    Exact PCA through the smaller Gram matrix: (P x P) X X^T when D > P, else the covariance
    (D x D), in float32, then its eigendecomposition (float32 keeps the leading 1000
    eigenpairs to ~1e-6 of the largest eigenvalue, far below any ridge penalty). Column signs
    are arbitrary (every readout here is invariant to them).
    """
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    n, d = x.shape
    k = min(n_components, n - 1, d)
    gram, centred = _gram(x, device)
    values, vectors = _top_eigenpairs(gram, k, device)
    keep = values > values[0] * 1e-10
    if d > n:
        scores = vectors[:, keep] * np.sqrt(values[keep])
    else:
        scores = centred @ vectors[:, keep]
    return scores.astype(np.float32)


def _gram(x: np.ndarray, device, block: int = 32_000_000) -> tuple[np.ndarray, np.ndarray | None]:
    """The centred Gram matrix of x [P, D] (P x P when D > P, else D x D), and the centred x
    when D <= P (the scores are then its projections).

    On the CPU numpy's product: it calls BLAS's symmetric rank-k update for c @ c.T
    (measured 2.1x less CPU than torch's general product at 3000 x 16384, one thread), summed
    over blocks of about `block` values of centred columns, so no centred copy of a wide
    layer is held (at 3000 x 65536: 128 MB instead of 786 MB, for 4 % more CPU); on an
    accelerator torch's.
    """
    import torch

    n, d = x.shape
    if torch.device(device).type == "cpu":
        mean = x.mean(axis=0)
        if d <= n:
            centred = x - mean
            return centred.T @ centred, centred
        gram, step = np.zeros((n, n), dtype=np.float32), max(1, block // n)
        for start in range(0, d, step):
            columns = x[:, start : start + step] - mean[start : start + step]
            gram += columns @ columns.T
        return gram, None
    xt = torch.as_tensor(x).to(device)
    xt = xt - xt.mean(dim=0)
    gram = xt @ xt.T if d > n else xt.T @ xt
    return gram, (xt.cpu().numpy() if d <= n else None)


def _top_eigenpairs(gram, k: int, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending) and their eigenvectors of a symmetric matrix.

    torch's full eigh (MKL's divide and conquer on the CPU): measured on the 3000 x 3000 Gram
    matrix of 16384 rectified noise features, top 1000, float32, one thread, 2.0 CPU s vs
    11.3 s for LAPACK's subset driver (scipy `evr` on OpenBLAS, used before); with the
    symmetric product, the PCA of the six layers of benchmarks/bench_predictivity.py at 3000
    images took 23 instead of 39 CPU s.
    """
    import torch

    values, vectors = torch.linalg.eigh(torch.as_tensor(gram).to(device))
    values, vectors = values.cpu().numpy(), vectors.cpu().numpy()
    return values[::-1][:k].copy(), vectors[:, ::-1][:, :k].copy()


def unit_norm_scale(z: np.ndarray) -> np.ndarray:
    """z scaled so that the mean squared norm of its rows (centred) is 1."""
    centred = z - z.mean(axis=0)
    return z / np.sqrt(max(float((centred**2).sum(axis=1).mean()), 1e-30))


# ----------------------------------------------------------------------------- folds
@dataclass(frozen=True)
class CVPlan:
    """Outer folds (train, test) over presentations and where hyper-parameters are chosen."""

    outer: list[tuple[np.ndarray, np.ndarray]]
    groups: np.ndarray
    select: np.ndarray | None = None  # fit presentations (split) or None: nested
    inner_folds: int | str = 3
    seed: int = 0


def stratified_folds(groups, n_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_folds` (train, test) index pairs, each group spread evenly over the test folds."""
    from sklearn.model_selection import StratifiedKFold

    groups = np.asarray(groups)
    if not 2 <= n_folds <= len(groups):
        raise ValueError(f"n_folds must lie in 2..{len(groups)} (presentations), got {n_folds}")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(groups)), groups))


def cv_plan(groups, split=None, outer_folds=5, inner_folds=3, seed=0) -> CVPlan:
    """Folds stratified by `groups`; with `split`, outer folds over the `report` presentations
    and hyper-parameters chosen on the `fit` ones (seed 003's variation levels)."""
    groups = np.asarray(groups).astype(str)
    if split is None:
        return CVPlan(stratified_folds(groups, outer_folds, seed), groups, None, inner_folds, seed)
    split = np.asarray(split).astype(str)
    report, fit = np.flatnonzero(split == "report"), np.flatnonzero(split == "fit")
    if len(report) == 0 or len(fit) == 0:
        raise ValueError("split must contain both 'fit' and 'report' presentations")
    outer = [
        (report[tr], report[te]) for tr, te in stratified_folds(groups[report], outer_folds, seed)
    ]
    return CVPlan(outer, groups, fit, inner_folds, seed)


# ----------------------------------------------------------------------------- readouts
class Readout:
    """A readout: `nested` chooses hyper-parameters on a training set and predicts the test
    set; `select` only chooses them; `fit_predict` fits with given ones."""

    name = ""

    def __init__(self, settings: PredictivitySettings):
        self.settings = settings

    def nested(self, x_tr, y_tr, groups_tr, x_te) -> tuple[np.ndarray, np.ndarray]:
        hyper = self.select(x_tr, y_tr, groups_tr)
        return self.fit_predict(x_tr, y_tr, x_te, hyper), hyper

    def select(self, x, y, groups) -> np.ndarray:
        return np.full(y.shape[1], np.nan)

    def fit_predict(self, x_tr, y_tr, x_te, hyper) -> np.ndarray:
        raise NotImplementedError


class RidgeReadout(Readout):
    """Ridge on PCA scores, alpha per neuroid by inner CV: himalaya `RidgeCV` on K folds
    stratified by the grouping (backend switch), or scikit-learn's efficient leave-one-out
    `RidgeCV(alpha_per_target=True)` when `inner_folds == "loo"`."""

    name = "ridge_pca"

    def nested(self, x_tr, y_tr, groups_tr, x_te):
        if self.settings.inner_folds == "loo":
            model = self._sklearn_loo(x_tr.shape).fit(x_tr, y_tr)
            return model.predict(x_te), np.broadcast_to(model.alpha_, (y_tr.shape[1],))
        with himalaya_backend(self.settings.backend) as backend:
            model = self._himalaya_cv(groups_tr).fit(x_tr, y_tr)
            prediction = backend.to_numpy(model.predict(x_te))
            return prediction, backend.to_numpy(model.best_alphas_)

    def select(self, x, y, groups):
        if self.settings.inner_folds == "loo":
            return np.broadcast_to(self._sklearn_loo(x.shape).fit(x, y).alpha_, (y.shape[1],))
        with himalaya_backend(self.settings.backend) as backend:
            return backend.to_numpy(self._himalaya_cv(groups).fit(x, y).best_alphas_)

    def fit_predict(self, x_tr, y_tr, x_te, hyper):
        from himalaya.ridge import Ridge

        with himalaya_backend(self.settings.backend) as backend:
            alpha = backend.asarray(np.asarray(hyper, dtype=x_tr.dtype))
            batch = _targets_batch(*x_tr.shape)
            model = Ridge(alpha=alpha, fit_intercept=True, solver_params={"n_targets_batch": batch})
            return backend.to_numpy(model.fit(x_tr, y_tr).predict(x_te))

    def _himalaya_cv(self, groups):
        from himalaya.ridge import RidgeCV

        folds = stratified_folds(groups, int(self.settings.inner_folds), self.settings.seed + 1)
        alphas = np.asarray(self.settings.alphas, dtype=np.float32)
        return RidgeCV(alphas=alphas, cv=folds, fit_intercept=True, solver_params={"warn": False})

    def _sklearn_loo(self, shape: tuple[int, int]):
        from sklearn.linear_model import RidgeCV

        # one decomposition shared by every alpha and neuroid, chosen by shape [n, k]: more
        # samples than features, the SVD of X (sklearn's "auto" would take the covariance
        # eigen-solver, whose per-alpha k x k inverse was measured 2.5x slower at 2400 x 1000
        # x 256 targets); else the eigendecomposition of the n x n Gram matrix ("eigen"),
        # measured 0.34 vs 0.48 CPU s for the SVD at 800 x 999
        mode = "svd" if shape[0] > shape[1] else "eigen"
        alphas = np.asarray(self.settings.alphas)
        return RidgeCV(alphas=alphas, alpha_per_target=True, gcv_mode=mode)


def _targets_batch(n_samples: int, n_features: int, budget: float = 5e7) -> int:
    """Targets per batch of himalaya's per-target-alpha solve ([batch, k, n] floats)."""
    return max(1, int(budget // max(n_samples * n_features, 1)))


@contextlib.contextmanager
def himalaya_backend(name: str) -> Iterator:
    """himalaya's global backend set to `name` inside the block (restored after)."""
    from himalaya.backend import get_backend, set_backend

    previous = get_backend()
    backend = set_backend(name, on_error="raise")
    try:
        yield backend
    finally:
        set_backend(previous, on_error="raise")


class PLSReadout(Readout):
    """scikit-learn PLSRegression with 25 components and scale=False (Brain-Score's
    `pls_regression` defaults), on PCA scores; no hyper-parameter."""

    name = "pls_pca"

    def fit_predict(self, x_tr, y_tr, x_te, hyper):
        from sklearn.cross_decomposition import PLSRegression

        k = min(self.settings.pls_components, x_tr.shape[1], len(x_tr) - 1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Y residual is constant")
            model = PLSRegression(n_components=k, scale=False).fit(x_tr, y_tr)
        return model.predict(x_te).reshape(len(x_te), -1)


class FactorisedReadout(Readout):
    """The seed's readout (Klindt et al. 2017): r_hat = sum_ijk ms[i,j] mc[k] x[i,j,k] + b per
    neuroid, loss = mean squared error + w (||ms||^2 + ||mc||^2), Adam; w chosen per neuroid
    among `weight_decays` on a stratified hold-out of the training presentations."""

    name = "factorised_map"

    def select(self, x, y, groups):
        s = self.settings
        folds = max(2, round(1 / s.factorised_holdout))
        train, val = stratified_folds(groups, folds, s.seed + 2)[0]
        decays = np.asarray(s.weight_decays, dtype=np.float64)
        n = y.shape[1]
        tiled = np.tile(y, (1, len(decays)))  # every (w, neuroid) pair fitted at once
        per_target = np.repeat(decays, n)
        params = fit_factorised(x[train], tiled[train], per_target, **self._fit_options())
        r = pearson_columns(predict_factorised(params, x[val]), tiled[val])
        r = np.nan_to_num(r, nan=-np.inf).reshape(len(decays), n)
        return decays[r.argmax(axis=0)]

    def fit_predict(self, x_tr, y_tr, x_te, hyper):
        params = fit_factorised(x_tr, y_tr, np.asarray(hyper), **self._fit_options())
        return predict_factorised(params, x_te)

    def _fit_options(self) -> dict:
        s = self.settings
        return {
            "steps": s.factorised_steps,
            "lr": s.factorised_lr,
            "batch_size": s.factorised_batch,
            "device": s.device,
            "seed": s.seed,
        }


def fit_factorised(
    maps,
    targets,
    weight_decay,
    steps: int = 600,
    lr: float = 0.03,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Fit the factorised readout of seed 003 (Methods, "Neural response fitting procedure"):
    per target n, r_hat = sum_ij ms[n,i,j] sum_k mc[n,k] x[k,i,j] + b[n], minimising
    mean_b (r_hat - r)^2 + w_n (||ms_n||^2 + ||mc_n||^2) with Adam on mini-batches of images.

    Channels of `maps` [n, C, H, W] are standardised (training mean/std over images and
    positions) and targets z-scored, so one grid of `weight_decay` [N] (or a scalar) and one
    learning rate suit every layer; the returned parameters include both normalisations.
    The spatial mask starts uniform (average pooling), the channel mask near zero.
    """
    import torch

    from ssltrace.device import resolve_device

    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    y = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    norm = _normalisers(x, y)
    x = ((x - norm["x_mean"]) / norm["x_std"]).to(dev)
    y = ((y - norm["y_mean"]) / norm["y_std"]).to(dev)
    n_targets, (_, c, h, w) = y.shape[1], x.shape
    decay = torch.as_tensor(np.broadcast_to(weight_decay, (n_targets,)).astype(np.float32)).to(dev)
    spatial = torch.full((n_targets, h, w), 1.0 / (h * w) ** 0.5, device=dev).requires_grad_()
    channel = (0.01 * torch.randn(n_targets, c, generator=gen) / c**0.5).to(dev).requires_grad_()
    bias = torch.zeros(n_targets, device=dev, requires_grad=True)
    optimiser = torch.optim.Adam([spatial, channel, bias], lr=lr)
    for _ in range(steps):
        xb, yb = x, y  # full batch when it fits (small sets: no sampling overhead)
        if len(x) > batch_size:
            batch = torch.randperm(len(x), generator=gen)[:batch_size].to(dev)
            xb, yb = x[batch], y[batch]
        error = _factorised_forward(xb, spatial, channel) + bias - yb
        penalty = (decay * ((spatial**2).sum((1, 2)) + (channel**2).sum(1))).sum()
        loss = (error**2).mean(0).sum() + penalty
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    params = {"spatial": spatial, "channel": channel, "bias": bias}
    return {k: v.detach().cpu().numpy() for k, v in params.items()} | {
        k: v.numpy() for k, v in norm.items()
    }


def _normalisers(x, y) -> dict:
    return {
        "x_mean": x.mean(dim=(0, 2, 3), keepdim=True)[0],
        "x_std": x.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-6),
        "y_mean": y.mean(0),
        "y_std": y.std(0).clamp_min(1e-6),
    }


def _factorised_forward(x, spatial, channel):
    """[B, N]: sum_k channel[n, k] sum_ij spatial[n, i, j] x[b, k, i, j]."""
    import torch

    return (torch.einsum("bkij,nij->bnk", x, spatial) * channel).sum(-1)


def predict_factorised(params: Mapping[str, np.ndarray], maps, batch_size: int = 256):
    """Predictions [n, N] of `fit_factorised`'s parameters for maps [n, C, H, W]."""
    import torch

    p = {k: torch.as_tensor(v) for k, v in params.items()}
    x = (torch.as_tensor(np.asarray(maps, dtype=np.float32)) - p["x_mean"]) / p["x_std"]
    with torch.no_grad():
        out = [
            _factorised_forward(x[i : i + batch_size], p["spatial"], p["channel"]) + p["bias"]
            for i in range(0, len(x), batch_size)
        ]
    return (torch.cat(out) * p["y_std"] + p["y_mean"]).numpy().astype(np.float64)


READOUT_CLASSES = {cls.name: cls for cls in (RidgeReadout, PLSReadout, FactorisedReadout)}


# ----------------------------------------------------------------------------- scoring
def cross_validated_r(readout: Readout, x, y, plan: CVPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuroid Pearson r on held-out presentations (mean over outer folds) and the
    hyper-parameter per neuroid (chosen on `plan.select`, else the median over folds)."""
    fixed = None
    if plan.select is not None:
        fixed = readout.select(x[plan.select], y[plan.select], plan.groups[plan.select])
    scores, hypers = [], []
    for train, test in plan.outer:
        if fixed is None:
            prediction, hyper = readout.nested(x[train], y[train], plan.groups[train], x[test])
        else:
            prediction, hyper = readout.fit_predict(x[train], y[train], x[test], fixed), fixed
        scores.append(pearson_columns(np.asarray(prediction, dtype=np.float64), y[test]))
        hypers.append(np.asarray(hyper, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN neuroids stay NaN
        return np.nanmean(scores, axis=0), np.nanmedian(hypers, axis=0)


def layer_predictivity(
    features,
    targets,
    groups,
    region,
    readout: str = "ridge_pca",
    ceiling: np.ndarray | None = None,
    split=None,
    settings: PredictivitySettings | None = None,
) -> NeuroidScores:
    """Score one layer against every neuroid (seed 003 Methods, "Neural response fitting").

    Args:
        features: the layer's activations for the dataset's presentations, [P, D] (flattened)
            for `ridge_pca`/`pls_pca`, the unpooled map [P, C, H, W] for `factorised_map`.
        targets: repetition-averaged responses [P, N] (`NeuralData.mean_responses()`).
        groups, split: per presentation, the stratification grouping and optional fit/report.
        region: [N] region of each neuroid.
        ceiling: [N] split-half reliability (`split_half_reliability`), None without one.
    """
    s = settings or PredictivitySettings()
    if readout not in READOUT_CLASSES:
        raise ValueError(f"unknown readout {readout!r}; expected one of {READOUTS}")
    x, y = _readout_inputs(features, targets, readout, s)
    plan = cv_plan(groups, split, s.outer_folds, s.inner_folds, s.seed)
    raw, hyper = cross_validated_r(READOUT_CLASSES[readout](s), x, y, plan)
    ceiling = None if ceiling is None else np.asarray(ceiling, dtype=np.float64)
    return NeuroidScores(
        readout=readout,
        raw=raw,
        ceiling=np.full(len(raw), np.nan) if ceiling is None else ceiling,
        ceiled=ceil_scores(raw, ceiling),
        region=np.asarray(region).astype(str),
        hyper=hyper,
    )


def dataset_ceiling(data, settings: PredictivitySettings | None = None) -> np.ndarray | None:
    """Split-half reliability [N] of a `NeuralData` (once per dataset), None when it has a
    single repetition (then only raw r is reported)."""
    s = settings or PredictivitySettings()
    if not data.has_ceiling:
        return None
    return split_half_reliability(data.responses, s.ceiling_splits, s.seed)


def score_layer(
    features,
    data,
    readout: str = "ridge_pca",
    ceiling: np.ndarray | None = None,
    settings: PredictivitySettings | None = None,
) -> NeuroidScores:
    """`layer_predictivity` of one layer's activations (rows = `data`'s presentations, in
    order) against a `NeuralData` (repetition-averaged responses, grouping, split, regions)."""
    return layer_predictivity(
        features,
        data.mean_responses(),
        data.groups,
        data.region,
        readout,
        ceiling,
        data.split,
        settings,
    )


def _readout_inputs(features, targets, readout: str, s: PredictivitySettings):
    features = np.asarray(features, dtype=np.float32)
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim != 2 or len(features) != len(y):
        raise ValueError(
            f"targets must be [P, N] with P = {len(features)} (rows of features), got {y.shape}"
        )
    if not np.isfinite(y).all():
        raise ValueError("targets must be finite (average the repetitions present first)")
    if readout == "factorised_map":
        if features.ndim != 4:
            raise ValueError(f"factorised_map needs maps [P, C, H, W], got {features.shape}")
        return features, y
    from ssltrace.device import resolve_device

    z = pca_scores(features, s.n_components, device=resolve_device(s.device))
    return (unit_norm_scale(z) if s.scale_features else z), y.astype(np.float32)


def region_summaries(
    scores: NeuroidScores, n_boot: int = 200, seed: int = 0
) -> list[RegionSummary]:
    """Per region: medians over its neuroids and bootstrap SEs (seed 003: 200 resamples)."""
    out = []
    rng = np.random.default_rng(seed)
    for name in dict.fromkeys(scores.region.tolist()):
        member = scores.region == name
        raw, ceiled = scores.raw[member], scores.ceiled[member]
        draws = rng.integers(member.sum(), size=(n_boot, member.sum()))
        has_ceiling = bool(np.isfinite(ceiled).any())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            raw_se = float(np.nanmedian(raw[draws], axis=1).std(ddof=1))
            se = float(np.nanmedian(ceiled[draws], axis=1).std(ddof=1)) if has_ceiling else raw_se
            out.append(
                RegionSummary(
                    region=name,
                    n_neuroids=int(member.sum()),
                    raw_median=float(np.nanmedian(raw)),
                    ceiled_median=float(np.nanmedian(ceiled)) if has_ceiling else float("nan"),
                    ceiling_median=float(np.nanmedian(scores.ceiling[member])),
                    se=se,
                    raw_se=raw_se,
                )
            )
    return out


def summary_rows(layer: str, readout: str, summaries: Sequence[RegionSummary]) -> list[tuple]:
    """Tidy rows (layer, probe = region, metric, value) of `region_summaries`."""
    rows = []
    for s in summaries:
        for metric, value in (
            ("r", s.raw_median),
            ("ceiled", s.ceiled_median),
            ("ceiling", s.ceiling_median),
            ("se", s.se),
            ("r_se", s.raw_se),
            ("n", s.n_neuroids),
        ):
            rows.append((layer, s.region, f"{readout}_{metric}", float(value)))
    return rows


def ttest_matrix(
    samples: Mapping[str, np.ndarray], paired: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Two-tailed t-tests between every pair of conditions (seed 003 Extended Data Figs. 1, 8).

    paired=True: `scipy.stats.ttest_rel` over matched units (neuroids), pairs with a NaN
    dropped; False: `ttest_ind` (e.g. behavioural consistency over seeds). Returns (names,
    t [M, M], p [M, M]); t[i, j] > 0 when condition i exceeds j; the diagonal is NaN.
    """
    names = list(samples)
    m = len(names)
    t, p = np.full((m, m), np.nan), np.full((m, m), np.nan)
    for i in range(m):
        for j in range(m):
            if i != j:
                t[i, j], p[i, j] = _ttest(samples[names[i]], samples[names[j]], paired)
    return names, t, p


def _ttest(a, b, paired: bool) -> tuple[float, float]:
    import scipy.stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired samples must match, got {a.shape} and {b.shape}")
        keep = np.isfinite(a) & np.isfinite(b)
        result = scipy.stats.ttest_rel(a[keep], b[keep])
    else:
        result = scipy.stats.ttest_ind(a[np.isfinite(a)], b[np.isfinite(b)])
    return float(result.statistic), float(result.pvalue)


# ----------------------------------------------------------------------------- pipeline analysis
def feature_map(features: np.ndarray, shape) -> np.ndarray:
    """A layer's stored activations [P, d] as maps [P, C, H, W] for the factorised readout:
    the full map when it was stored flattened (extract pooling `flatten`), the 2x2 grid of
    `avg2x2`, else (a vector layer, or mean/max pooling) [P, d, 1, 1]."""
    shape = tuple(int(v) for v in np.atleast_1d(shape))
    d = features.shape[1]
    if len(shape) == 3 and d == int(np.prod(shape)):
        return features.reshape(len(features), *shape)
    if len(shape) == 3 and d == shape[0] * 4:
        return features.reshape(len(features), shape[0], 2, 2)
    return features.reshape(len(features), d, 1, 1)


@ANALYSES.register("predictivity")
class Predictivity(PerEpochAnalysis):
    """Neural predictivity of every layer for every neural dataset of the `neural` probe set
    (seed 003 Fig. 2b-c, Extended Data Figs. 1-3, 11).

    Rows per (layer, probe = `dataset:region`): `<readout>_r` (median raw r over the region's
    neuroids), `<readout>_ceiled` (median of r / sqrt(split-half reliability)),
    `<readout>_ceiling` (median reliability), `<readout>_se` (bootstrap SE of the ceiled median,
    of the raw one without a ceiling), `<readout>_r_se`, `<readout>_n`; the readout's name
    says what it is fitted on (`factorised_map`: the full map; `ridge_pca`, `pls_pca`: PCA of
    the flattened map). Array file `scores`: per-neuroid `scores` [epoch, kind (raw, ceiled),
    readout, layer, neuroid] for the t-tests, with `region`, `neuroid`, `ceiling` per neuroid.
    """

    name = "predictivity"
    summary = (
        "neural predictivity per layer and region: factorised / ridge / PLS readouts, "
        "split-half noise ceilings, bootstrap SE (seed 003 Methods, Fig. 2)"
    )
    inputs = {"neural": Activations("neural"), "probe": ProbeFile("neural")}
    arrays = ("scores",)
    sections = ("predictivity",)
    resources = {"mem_mb": 16000, "runtime": 240, "gpu": 1}
    stacked = "scores"

    def measure_settings(self) -> PredictivitySettings:
        keys = {f.name for f in fields(PredictivitySettings)}
        return PredictivitySettings.from_mapping(
            {k: v for k, v in self.settings.items() if k in keys}
        )

    def prepare(self, job):
        from ssltrace import io
        from ssltrace.data.neural import probe_block_data
        from ssltrace.store import file_digest

        probe = io.load_npz(job.inputs["probe"])
        self.probe_path, self.labels = job.inputs["probe"], probe["labels"]
        self.probe_digest = file_digest(job.inputs["probe"])
        s = self.measure_settings()
        self.blocks = []
        for b, kind in enumerate(probe["block_kind"].astype(str)):
            if kind != "neural":
                continue
            data = probe_block_data(probe, b)
            ceiling = dataset_ceiling(data, s) if self.settings.get("ceiling", True) else None
            self.blocks.append((b, str(probe["class_names"][b]), data, ceiling))

    def cache_settings(self):
        # the probe file holds the responses scored (the activations' key has its images)
        return {**self.settings, "probe": self.probe_digest}

    def epoch(self, role, acts):
        from ssltrace.analysis.base import layer_names

        if not np.array_equal(acts["labels"], self.labels):
            raise ValueError(f"activations were not extracted from probe set {self.probe_path}")
        layers, readouts = layer_names(acts), list(self.settings["readouts"])
        n = sum(len(data.region) for _, _, data, _ in self.blocks)
        scores = np.full((2, len(readouts), len(layers), n), np.nan)
        rows = []
        for li, layer in enumerate(layers):
            for ri, readout in enumerate(readouts):
                rows += self._layer(acts, layer, readout, scores[:, ri, li])
        return rows, {"scores": scores, **self._labels(layers, readouts)}

    def _layer(self, acts, layer: str, readout: str, out: np.ndarray) -> list:
        s, rows, start = self.measure_settings(), [], 0
        for b, name, data, ceiling in self.blocks:
            features = acts[layer][self.labels == b]
            if readout == "factorised_map":
                features = feature_map(features, acts.get(f"shape_{layer}", ()))
            scores = score_layer(features, data, readout, ceiling, s)
            stop = start + len(scores.raw)
            out[0, start:stop], out[1, start:stop] = scores.raw, scores.ceiled
            start = stop
            summaries = region_summaries(scores, s.bootstrap, s.seed)
            rows += [
                (lay, f"{name}:{region}", metric, value)
                for lay, region, metric, value in summary_rows(layer, readout, summaries)
            ]
        return rows

    def _labels(self, layers, readouts) -> dict[str, np.ndarray]:
        region = [f"{name}:{r}" for _, name, data, _ in self.blocks for r in data.region]
        neuroid = [f"{name}:{i}" for _, name, data, _ in self.blocks for i in data.neuroid_id]
        ceilings = [
            np.full(len(data.region), np.nan) if c is None else c for *_, data, c in self.blocks
        ]
        return {
            "layers": np.array(layers),
            "readouts": np.array(readouts),
            "kinds": np.array(["raw", "ceiled"]),
            "region": np.array(region),
            "neuroid": np.array(neuroid),
            "ceiling": np.concatenate(ceilings),
        }
