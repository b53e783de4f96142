"""Linear probes: test accuracy of a linear read-out trained on frozen features.

Two probes, as in seed paper 004 (linear SVM) and the usual linear-evaluation protocol
(multinomial logistic regression), each with two solvers:

- 'sklearn' (CPU): `LinearSVC` (one-vs-rest, squared hinge, L2) and `LogisticRegression`
  (multinomial, L-BFGS, L2).
- 'torch' (GPU, or CPU): the same objectives minimised full-batch with L-BFGS in torch —
  used on CUDA, where liblinear's one-vs-rest loop over hundreds of sample-level classes
  would dominate a whole metrics job.

Both solvers minimise  mean_i loss_i + ||W||² / (2 C n)  (sklearn's scaling: C Σ loss + ½||W||²
divided by C n), with the intercept unpenalised (liblinear's SVM can only penalise it like a
weight on a constant feature; that feature is scaled up tenfold so the penalty is 1/100 of a
weight's). Features are standardised with training-set statistics first.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ssltrace.device import resolve_device  # re-exported: fewshot imports it from here

PROBE_KINDS = ("svm", "logistic")
BACKENDS = ("auto", "sklearn", "torch")
_LBFGS_BLOCK = 10  # iterations between relative-progress checks of the torch solver


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    kind: str = "svm",
    standardise: bool = True,
    device: str | torch.device = "auto",
    C: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    backend: str = "auto",
    seed: int = 0,
) -> float:
    """Fit a linear probe on (train_x, train_y) and return its accuracy on (test_x, test_y).

    Args:
        train_x, test_x: float [n, d] features; train_y, test_y: int [n] labels (any
            integers; every test label must occur in training).
        kind: 'svm' (one-vs-rest squared-hinge linear SVM, as sklearn `LinearSVC`) or
            'logistic' (multinomial logistic regression).
        standardise: z-score each feature with the training mean and sd (constant
            features are only centred).
        device: where the torch solver runs ('auto' = CUDA when present).
        C: inverse L2 regularisation strength (sklearn's convention).
        max_iter: iteration budget of the solver. Convergence warnings are silenced: a
            probe that has not converged to tolerance still has a well-defined accuracy,
            and a metrics job fits thousands of probes.
        tol: stopping tolerance — sklearn's `tol` for the sklearn solvers; for the torch
            solver, the relative objective gain per 10 L-BFGS iterations below which it stops.
        backend: 'auto' (torch on CUDA, sklearn on CPU), 'sklearn' or 'torch'.
        seed: seeds liblinear's coordinate order.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind must be one of {PROBE_KINDS}, got {kind!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not (np.isscalar(C) and C > 0):
        raise ValueError(f"C must be a positive number, got {C!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not (np.isscalar(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    train_x, test_x = check_features(train_x, "train_x"), check_features(test_x, "test_x")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x and test_x must have the same number of features: "
            f"{train_x.shape[1]} vs {test_x.shape[1]}"
        )
    train_t, test_t, n_classes = encode_labels(train_y, test_y, train_x, test_x)
    if n_classes < 2:
        raise ValueError("train_y must contain at least two classes")
    if standardise:
        train_x, test_x = _standardise(train_x, test_x)

    dev = resolve_device(device)
    if backend == "auto":
        backend = "torch" if dev.type == "cuda" else "sklearn"
    if backend == "sklearn":
        pred = _fit_predict_sklearn(train_x, train_t, test_x, kind, C, max_iter, tol, seed)
    else:
        pred = _fit_predict_torch(train_x, train_t, test_x, n_classes, kind, C, max_iter, tol, dev)
    return float(np.mean(pred == test_t))


def check_features(x: np.ndarray, name: str, dtype=np.float32) -> np.ndarray:
    """Validate a [n, d] finite numeric feature matrix; return it as `dtype`."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D [n_samples, n_features] array, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return x


def check_labels(y: np.ndarray, name: str, n: int) -> np.ndarray:
    """Validate integer labels of length n."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name} must be an integer array of shape ({n},), got {y.dtype} {y.shape}"
        )
    return y


def encode_labels(
    train_y: np.ndarray, test_y: np.ndarray, train_x: np.ndarray, test_x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Map labels to 0..K-1 by the training classes; every test label must be one of them."""
    train_y = check_labels(train_y, "train_y", train_x.shape[0])
    test_y = check_labels(test_y, "test_y", test_x.shape[0])
    classes, train_t = np.unique(train_y, return_inverse=True)
    test_t = np.searchsorted(classes, test_y)
    unseen = (test_t >= classes.size) | (classes[np.minimum(test_t, classes.size - 1)] != test_y)
    if unseen.any():
        raise ValueError(
            f"test_y holds {np.unique(test_y[unseen]).size} classes absent from train_y "
            f"(e.g. {test_y[unseen][0]}); a probe cannot predict a class it never saw"
        )
    return train_t.astype(np.int64), test_t.astype(np.int64), int(classes.size)


def _standardise(train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train_x.mean(axis=0, dtype=np.float64)
    sd = train_x.std(axis=0, dtype=np.float64)
    sd[sd == 0] = 1.0
    return ((train_x - mean) / sd).astype(np.float32), ((test_x - mean) / sd).astype(np.float32)


def _fit_predict_sklearn(train_x, train_t, test_x, kind, C, max_iter, tol, seed) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if kind == "svm":
        # The dual solver: on probe-sized data (n of the order of d, often separable) it
        # was 10-40x faster than the primal one `dual="auto"` picks when n > d, with the
        # same predictions (benchmarks/bench_geometry.py). intercept_scaling=10 cuts
        # liblinear's penalty on the intercept 100-fold: with a tiny margin, a penalised
        # intercept moved test accuracy by up to 9 points away from the unpenalised optimum
        # that LogisticRegression and the torch solver find.
        model = LinearSVC(
            C=C, dual=True, intercept_scaling=10.0, tol=tol, max_iter=max_iter, random_state=seed
        )
    else:
        model = LogisticRegression(C=C, tol=tol, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_t)
    return model.predict(test_x)


def _fit_predict_torch(
    train_x, train_t, test_x, n_classes, kind, C, max_iter, tol, device
) -> np.ndarray:
    x = torch.from_numpy(train_x).to(device)
    t = torch.from_numpy(train_t).to(device)
    weight = torch.zeros(x.shape[1], n_classes, device=device, requires_grad=True)
    bias = torch.zeros(n_classes, device=device, requires_grad=True)
    penalty = 1.0 / (2.0 * C * x.shape[0])
    if kind == "svm":
        # One-vs-rest targets: +1 for the true class, -1 for every other class.
        signs = torch.full((x.shape[0], n_classes), -1.0, device=device)
        signs[torch.arange(x.shape[0], device=device), t] = 1.0

    def objective() -> torch.Tensor:
        scores = x @ weight + bias
        if kind == "svm":
            # Σ over the K binary problems of their mean squared hinge, as K LinearSVCs.
            data = torch.clamp(1.0 - signs * scores, min=0.0).pow(2).sum(dim=1).mean()
        else:
            data = torch.nn.functional.cross_entropy(scores, t)
        return data + penalty * weight.pow(2).sum()

    _minimise_lbfgs(objective, [weight, bias], max_iter, tol)
    with torch.no_grad():
        scores = torch.from_numpy(test_x).to(device) @ weight + bias
    return scores.argmax(dim=1).cpu().numpy()


def _minimise_lbfgs(objective, params: list[torch.Tensor], max_iter: int, tol: float) -> None:
    """Full-batch L-BFGS in blocks of iterations, stopped once a block gains < tol (relative).

    torch's own stopping rules are absolute (gradient and step sizes); on separable data the
    squared hinge keeps creeping down for hundreds of iterations without changing a single
    prediction, so a relative criterion saves most of the time. The optimiser keeps its
    curvature history between blocks.
    """
    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=_LBFGS_BLOCK,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    with torch.no_grad():
        previous = float(objective())
    for _ in range(0, max_iter, _LBFGS_BLOCK):
        optimiser.step(closure)
        with torch.no_grad():
            current = float(objective())
        if previous - current <= tol * abs(previous):
            break
        previous = current
