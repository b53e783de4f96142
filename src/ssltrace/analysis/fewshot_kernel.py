"""The fast kernel of the few-shot measures (`ssltrace.analysis.fewshot`), and the two
references it is validated against.

`mean_weights(x, plan, distance, device, rule)` gives M [C, C], the mean over the trials of
`plan` and the test samples of class a of the weight of prototype b under `rule`:
'sign': sign(score_b - score_own) (+1 nearer its own prototype, 0 tie, -1 nearer b), which
`errors_from_signs` turns into the pairwise errors; 'nearest': 1/k when b is one of the k
nearest of all C prototypes, else 0 (the confusion). `plan` is always a
`ssltrace.analysis.fewshot.ShotPlan`, checked when it was made; this module reads its
attributes and does not import that module (which imports this one).

No per-pair Python loop: per class and batch of trials, one float32 matrix product gives
the score difference of every sample of the class between every prototype and its own, and
the weights for all C×C pairs follow by reductions. The results are those of float64
arithmetic (`mean_weights_float64`): wherever a float32 difference is within a rigorous bound
on its rounding error (`_ErrorBound`), the sample is recomputed in float64. Runs on `device`
('auto': CUDA when present).

The references (tests and `benchmarks/bench_fewshot.py` check the kernel against both):
`mean_weights_float64`, float64 throughout, which the kernel must reproduce exactly (and falls
back to for magnitudes float32 cannot hold); `reference_pairwise_errors`, the literal
definition as a plain loop over trials and class pairs. Below, "the reference" is the first.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from ssltrace.device import resolve_device

__all__ = [
    "DISTANCES",
    "RULES",
    "errors_from_signs",
    "mean_weights",
    "mean_weights_float64",
    "reference_pairwise_errors",
]

DISTANCES = ("sqeuclidean", "cosine")
RULES = ("sign", "nearest")

# Cap on the elements of the float64 shots gathered for a batch of trials [t, C, m, d]:
# 2**24 float64 = 128 MiB, so a few such temporaries fit beside other jobs.
_BATCH_ELEMENTS = 2**24
# Float32 differences per block [t, C, rows] of the fast path (2 MiB): one class's samples
# for a few trials; measured (CPU seconds, 50 classes x 600 x 512, 30 trials, one thread):
# 2**17: 0.94, 2**18: 0.92, 2**19: 0.82, 2**20: 0.83.
_BLOCK_ELEMENTS = 2**19
# Float64 elements per chunk of rows when preparing the samples (1 MiB).
_CHUNK_ELEMENTS = 2**17


def mean_weights(
    x: torch.Tensor,
    plan,
    distance: str,
    device,
    rule: str,
    tolerance: float = 1.0,
    stats: dict | None = None,
) -> np.ndarray:
    """float64 M [C, C]: mean over trials and class-a test samples of the weight of prototype
    b under `rule` (see the module docstring), the decisions being those of
    `mean_weights_float64`.

    Score differences are computed in float32 (one matrix product per class and batch of
    trials), and every (sample, trial) whose decision float32 rounding could change (a
    difference within the rigorous bound of `_ErrorBound`) is recomputed in float64 as
    `mean_weights_float64` computes it.

    Args:
        x: [n, d] features (torch, float or int), checked finite by the caller.
        plan: the `ShotPlan` whose rows index `x`.
        distance: one of `DISTANCES`.
        device: 'auto' (CUDA when present), 'cpu', 'cuda', ...
        rule: one of `RULES`.
        tolerance: scales the bound (tests only: 0 trusts float32 except exact float32 ties).
        stats: if given, receives 'rows', the (test sample, trial) pairs, and 'rechecked',
            those recomputed in float64.
    """
    dev = _checked_device(x, plan, distance, device, rule)
    if _float32_scale(x.to(dev), distance) is None:  # magnitudes float32 cannot hold
        return mean_weights_float64(x, plan, distance, dev, rule)
    # All the threads torch has (the CLI sets the ones Snakemake granted): on a quiet 2-core
    # CPU, 50 x 600 x 512 with 100 trials took 1.9-2.3 s on two threads, 2.6-3.2 s on one.
    with _ieee_float32_matmul():
        tally = _tally_float32(x, plan, distance, dev, rule, tolerance)
    if stats is not None:
        stats["rows"] = plan.n_trials * int((plan.class_sizes - plan.n_shots).sum())
        stats["rechecked"] = tally.rechecked
    return _per_test(tally.total(), plan)


def _tally_float32(x, plan, distance: str, dev: torch.device, rule: str, tolerance) -> _Tally:
    """The weights of all test samples summed per class, batch of trials by batch."""
    samples = _Samples(x, plan, distance, dev)
    shots = torch.as_tensor(samples.position[plan.shots], device=dev)  # [T, C, m]
    n_classes = len(plan.classes)
    per_batch = _trials_per_batch(plan, x.shape[1])
    tally = _Tally(rule, n_classes, dev)
    for start in range(0, plan.n_trials, per_batch):
        batch_shots = shots[start : start + per_batch]
        prototypes = _Prototypes(samples, batch_shots, distance, rule, tolerance)
        skip = _shot_mask(batch_shots, len(samples.centred32))
        for a in range(n_classes):
            against = prototypes.against(a, tally.buffer(0))
            for lo, hi in samples.blocks(a, per_batch * n_classes):
                gaps = against.gaps32(samples, lo, hi, tally.buffer(1))
                bound = against.bound(samples, lo, hi)
                tally.add_float32(gaps, a, bound, skip[:, lo:hi], lo)
        tally.recheck(samples, prototypes, distance)
    return tally


def _trials_per_batch(plan, d: int) -> int:
    """Trials per batch: a class's float32 differences [t, C, rows] fill about one block
    (a class above 2**12 samples is split into several blocks rather than shrinking the
    batch further), and the gathered shots stay within `_BATCH_ELEMENTS`."""
    n_classes, largest = len(plan.classes), int(plan.class_sizes.max())
    by_block = _BLOCK_ELEMENTS // (n_classes * min(largest, 2**12))
    return max(1, min(by_block, _BATCH_ELEMENTS // (n_classes * plan.n_shots * d)))


def _checked_device(x: torch.Tensor, plan, distance: str, device, rule: str) -> torch.device:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if plan.rows.max() >= len(x):
        raise ValueError(f"plan.rows index samples beyond the {len(x)} rows of features")
    return resolve_device(device)


def _per_test(total: torch.Tensor, plan) -> np.ndarray:
    """Sums of weights per class pair [C, C] as means over the trials and test samples."""
    n_test = plan.class_sizes - plan.n_shots
    n_test = torch.as_tensor(n_test, device=total.device, dtype=torch.float64)
    return (total / (plan.n_trials * n_test[:, None])).cpu().numpy()


def errors_from_signs(mean_sign: np.ndarray) -> np.ndarray:
    """Pairwise errors [C, C] from `mean_weights` with rule 'sign': the fraction of class-a
    test samples nearer prototype b than prototype a, ties counting half; diagonal 0."""
    errors = 0.5 * (1.0 - mean_sign)
    np.fill_diagonal(errors, 0.0)
    return errors


class _Samples:
    """The samples of a plan sorted by class: row indices into the features (prototypes and
    rechecks convert those rows to float64 like the reference) and the compared vectors
    centred and scaled in float32.

    y: the compared vector (the features, unit vectors for 'cosine'); s: a power of two
    making ||y - c|| s <= 1 (exact, and keeps float32 far from overflow and underflow);
    c: the centre, c s = the float32 mean of y s. Centring changes each score by a
    per-sample constant only, and shrinks the magnitudes the float32 error grows with.
    centred32 = fl32(fl32(y s) - c s) is off by at most 1.01 u (2 |(y - c) s| + |c s|) in
    each component (u = 2^-24; underflow aside, see `_ErrorBound`).
    """

    def __init__(self, x: torch.Tensor, plan, distance: str, dev: torch.device):
        order = np.argsort(plan.class_index, kind="stable")
        self.position = np.empty_like(order)  # plan position -> sorted position
        self.position[order] = np.arange(len(order))
        self.x = x.to(dev)
        self.rows = torch.as_tensor(plan.rows[order], device=dev)
        self.cosine = distance == "cosine"
        self.class_index = torch.as_tensor(plan.class_index[order], device=dev)
        self.starts = np.concatenate([[0], np.cumsum(plan.class_sizes)])
        n, d = len(self.rows), x.shape[1]
        self.scale = _float32_scale(self.x, distance)
        if not self.cosine and self.x.dtype == torch.float32:
            centred = self.x[self.rows].mul_(self.scale)  # exact: power of two
        else:  # float64 (unit vectors, or wider input) in chunks of rows, rounded once
            centred = torch.empty(n, d, device=dev)
            step = max(1, _CHUNK_ELEMENTS // d)
            for lo in range(0, n, step):
                centred[lo : lo + step] = self.compared(self.rows[lo : lo + step]) * self.scale
        centre32 = centred.mean(dim=0)
        self.centred32 = centred.sub_(centre32)
        self.centre = centre32.double() / self.scale  # c, exactly
        self.centre_norm = float(_row_norm(self.centre[None]))
        # ||centred32|| rounded up: a float32 norm is off by less than (d/2 + 2) u
        self.centred_norm32 = _row_norm(self.centred32) * (1 + (d + 8) * 2.0**-24)

    def compared(self, rows: torch.Tensor) -> torch.Tensor:
        """float64 compared vectors (unit vectors for 'cosine') of feature rows, as the
        reference computes them."""
        y = self.x[rows].double()
        return torch.nn.functional.normalize(y, dim=1) if self.cosine else y

    def blocks(self, a: int, row_elements: int):
        """(first, end) positions of blocks of class a's sorted samples holding at most about
        `_BLOCK_ELEMENTS` differences, so that the passes over a block run in cache."""
        rows = max(1, _BLOCK_ELEMENTS // row_elements)
        for lo in range(self.starts[a], self.starts[a + 1], rows):
            yield int(lo), int(min(lo + rows, self.starts[a + 1]))


class _Prototypes:
    """The prototypes of a batch of trials: float64 as the reference has them, and centred
    and scaled for float32 score differences.

    Centred score of prototype p (unit vector for 'cosine') for compared vector y:
        sqeuclidean:  S_p(y) = s² (||p - c||² - 2 (y - c)·(p - c)) = s² (||y - p||² - ||y - c||²)
        cosine:       S_p(y) = s (-c·(p - c) - (y - c)·(p - c)) = s (-y·p + y·c),
    the reference score times s² (resp. s) plus a per-sample constant, so differences
    between prototypes keep their sign. S_p(y) = bias_p + alpha ((y - c) s)·operand_p.
    """

    def __init__(self, samples: _Samples, shot_pos: torch.Tensor, distance: str, rule, tolerance):
        shot_rows = samples.rows[shot_pos]
        self.raw = samples.x[shot_rows].double().mean(dim=2)  # [t, C, d], as the reference
        t, n_classes, d = self.raw.shape
        flat = self.raw.reshape(t * n_classes, d)
        compared = flat if distance == "sqeuclidean" else torch.nn.functional.normalize(flat, dim=1)
        centred = compared - samples.centre
        scale = samples.scale
        if distance == "sqeuclidean":
            self.alpha, unit = -2.0, scale**2
            bias, operand = (centred * centred).sum(dim=1) * unit, centred * scale
        else:
            self.alpha, unit = -1.0, scale
            bias, operand = -(centred @ samples.centre) * scale, centred
        self.operand32 = operand.float().view(t, n_classes, d)
        bias = bias.view(t, n_classes)
        # [a, t, b] bias_b - bias_a, the constant term of the differences for class a
        self.bias32 = (bias[None] - bias.T[:, :, None]).float().contiguous()
        self.bound = _ErrorBound(
            d=d,
            alpha=abs(self.alpha),
            unit=unit,
            scale=scale,
            bias_max=self.bias32.abs().amax(dim=2).double(),
            v_max=_difference_norm_max(operand.view(t, n_classes, d)),
            operand_max=_row_norm(operand).view(t, n_classes).amax(dim=1),
            rho_max=(_row_norm(compared) + samples.centre_norm).view(t, n_classes).amax(dim=1),
            centre_norm=samples.centre_norm,
            factor=(2 if rule == "nearest" else 1) * tolerance,
        )

    def against(self, a: int, buffer) -> _Against:
        return _Against(self, a, buffer)

    def scores64(self, compared: torch.Tensor, trial: int, distance: str) -> torch.Tensor:
        """float64 scores [rows, C] of compared vectors in one trial, as the reference has them."""
        return _scores(compared, self.raw[trial : trial + 1], distance)[:, 0]


class _ErrorBound:
    """Bound on the float32 rounding error of the differences D_b = S_b - S_a (`_Prototypes`),
    K0[a, t] + K1[a, t] ||centred32||: where a float32 difference is farther from 0 (rule
    'sign'; for 'nearest' the gap to the nearest, twice the bound) float64 decides alike.

    D_b is one float32 inner product (bias_b - bias_a) + alpha (y - c) s·v of d + 1 terms,
    v = fl32(operand_b - operand_a), computed by the matrix product in an unknown order;
    whatever the order, with or without FMA, it is off by at most γ_{d+1} Σ|terms|
    (Higham, Accuracy and Stability of Numerical Algorithms, §3.1: γ_k = k u / (1 - k u),
    u = 2^-24). With Cauchy-Schwarz (Σ|a_i b_i| <= ||a|| ||b||) and the rounding of the
    inputs to float32 (`_Samples`; v: u (|operand_b| + |operand_a|) per component),
        |D32 - D| <= g32 (B + alpha Y V) + 1.03 u alpha V ||c s|| + 2.03 u alpha Y P + tiny,
    B = max_b |bias_b - bias_a|, Y = ||centred32||, V = max_b ||v||, P = max_b ||operand_b||,
    g32 = γ_{d+6} (1 + 2^-10), tiny = (4d + 8) 2^-126 (2 + alpha V) for underflow (even
    flushed to zero). The float64 reference scores and the float64 preprocessing here are
    off by at most unit g64 (4 ρ² + 8 ρ ρ_y), ρ = max_p ||p|| + ||c||, ρ_y = ||y|| + ||c||
    <= 1.01 Y / s + 3 ||c||, g64 = 2 γ_{2d+8} with u = 2^-53, unit = s² (resp. s).
    """

    def __init__(
        self, d, alpha, unit, scale, bias_max, v_max, operand_max, rho_max, centre_norm, factor
    ):
        u = 2.0**-24
        g32 = _gamma(d + 6, u) * (1 + 2.0**-10)
        g64 = 2 * _gamma(2 * d + 8, 2.0**-53)
        tiny = (4 * d + 8) * 2.0**-126
        factor *= 1 + 2.0**-16  # covers the float32 rounding of the bound itself
        reference = unit * g64 * 4 * rho_max * (rho_max + 6 * centre_norm)
        k0_per_v = alpha * (1.03 * u * centre_norm * scale + tiny)
        k0 = g32 * bias_max + reference + 2 * tiny + k0_per_v * v_max
        k1 = 2.03 * u * alpha * operand_max + unit * g64 * 8 * rho_max * 1.01 / scale
        self.k0 = (factor * k0).float()[..., None]  # [C, t, 1]
        self.k1 = (factor * (k1 + g32 * alpha * v_max)).float()[..., None]


class _Against:
    """Float32 differences D_b = S_b - S_a (`_Prototypes`) of class-a samples."""

    def __init__(self, prototypes: _Prototypes, a: int, buffer):
        operand = prototypes.operand32
        t, n_classes, d = operand.shape
        self.shape = (t, n_classes)
        self.alpha = prototypes.alpha
        v = buffer(operand.numel()).view(t, n_classes, d)
        torch.sub(operand, operand[:, a : a + 1], out=v)
        self.v = v.view(t * n_classes, d)
        self.bias = prototypes.bias32[a].view(t * n_classes, 1)
        self.k0, self.k1 = prototypes.bound.k0[a], prototypes.bound.k1[a]

    def gaps32(self, samples: _Samples, lo: int, hi: int, buffer) -> torch.Tensor:
        """float32 differences [t, C, rows] for sorted samples lo..hi-1 (exact 0 for b = a).
        Samples are the last axis: reductions over prototypes run along rows of samples."""
        out = buffer(self.v.shape[0] * (hi - lo)).view(-1, hi - lo)
        torch.addmm(self.bias, self.v, samples.centred32[lo:hi].T, alpha=self.alpha, out=out)
        return out.view(*self.shape, hi - lo)

    def bound(self, samples: _Samples, lo: int, hi: int) -> torch.Tensor:
        """float32 [t, rows]: the bound of `_ErrorBound` for sorted samples lo..hi-1."""
        return torch.addcmul(self.k0, self.k1, samples.centred_norm32[lo:hi])


class _Tally:
    """Sums per class of the weights of `rule`, from float32 differences and float64 rechecks."""

    def __init__(self, rule: str, n_classes: int, dev: torch.device):
        self.rule = rule
        self.counts = torch.zeros(n_classes, n_classes, dtype=torch.float64, device=dev)
        # ties among k nearest prototypes, counted per k so that the 1/k shares sum exactly
        shape = (n_classes, n_classes, n_classes + 1)
        self.ties = torch.zeros(shape, dtype=torch.float64, device=dev)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.rechecked = 0
        self._scratch = [torch.empty(0, device=dev) for _ in range(3)]

    def buffer(self, slot: int):
        """A function giving reused float32 scratch memory of a size: fresh pages for every
        block would cost more than the work done in them."""

        def take(size: int) -> torch.Tensor:
            if self._scratch[slot].numel() < size:
                self._scratch[slot] = torch.empty(size, device=self.counts.device)
            return self._scratch[slot][:size]

        return take

    def add_float32(self, gaps, a: int, bound, skip, lo: int) -> None:
        """Add the float32 weights of a block of class-a samples from their differences
        [t, C, rows], leaving out `skip` [t, rows] (shots) and the samples that float64
        could decide otherwise (kept for `recheck`). Overwrites `gaps`."""
        if self.rule == "sign":
            size = torch.abs(gaps, out=self.buffer(2)(gaps.numel()).view(gaps.shape))
            size[:, a] = float("inf")  # the own column (exact 0)
            unsure = size.amin(dim=1) <= bound
            weights = gaps.sign_()
        else:
            nearest = gaps.argmin(dim=1, keepdim=True)
            first = gaps.gather(1, nearest)
            second = gaps.scatter_(1, nearest, float("inf")).amin(dim=1, keepdim=True)
            unsure = (second - first)[:, 0] <= bound
            weights = torch.zeros_like(gaps).scatter_(1, nearest, 1.0)
        unsure &= ~skip
        trials, samples = (unsure | skip).nonzero(as_tuple=True)
        block = weights.sum(dim=(0, 2)) - weights[trials, :, samples].sum(dim=0)
        self.counts[a] += block.double()  # whole numbers below 2^24: exact in float32
        trials, samples = unsure.nonzero(as_tuple=True)
        if len(samples):
            self.pending.append((samples + lo, trials))

    def recheck(self, samples: _Samples, prototypes: _Prototypes, distance: str) -> None:
        """Add the float64 weights of the (sample, trial) pairs set aside by `add_float32`."""
        if not self.pending:
            return
        positions = torch.cat([p for p, _ in self.pending])
        trials = torch.cat([t for _, t in self.pending])
        self.pending.clear()
        self.rechecked += len(positions)
        trials, order = torch.sort(trials, stable=True)
        positions = positions[order]
        compared = samples.compared(samples.rows[positions])
        classes = samples.class_index[positions]
        trial_ids, counts = torch.unique_consecutive(trials, return_counts=True)
        start = 0
        for trial, count in zip(trial_ids.tolist(), counts.tolist(), strict=True):
            part = slice(start, start + count)
            start += count
            scores = prototypes.scores64(compared[part], trial, distance)
            if self.rule == "sign":
                own = scores.gather(1, classes[part, None])
                self.counts.index_add_(0, classes[part], _float64_weights(scores, own, "sign"))
            else:
                self._add_nearest(scores, classes[part])

    def _add_nearest(self, scores: torch.Tensor, classes: torch.Tensor) -> None:
        is_min = scores == scores.amin(dim=1, keepdim=True)
        k = is_min.sum(dim=1)
        single = k == 1
        self.counts.index_add_(0, classes[single], is_min[single].double())
        row, column = is_min[~single].nonzero(as_tuple=True)
        ones = torch.ones(len(row), dtype=torch.float64, device=scores.device)
        self.ties.index_put_((classes[~single][row], column, k[~single][row]), ones, True)

    def total(self) -> torch.Tensor:
        if self.rule == "sign":
            return self.counts
        k = torch.arange(self.ties.shape[2], device=self.ties.device).clamp(min=1)
        return self.counts + (self.ties / k).sum(dim=2)


def _shot_mask(shot_pos: torch.Tensor, n: int) -> torch.Tensor:
    """bool [t, n]: which sorted samples are shots in each trial of a batch (shot_pos [t, C, m])."""
    mask = torch.zeros(shot_pos.shape[0], n, dtype=torch.bool, device=shot_pos.device)
    trial = torch.arange(shot_pos.shape[0], device=shot_pos.device).view(-1, 1, 1)
    mask[trial.expand_as(shot_pos), shot_pos] = True
    return mask


def _difference_norm_max(operand: torch.Tensor) -> torch.Tensor:
    """[a, t] upper bound on max_b ||fl32(fl32(o_b) - fl32(o_a))|| for float64 o [t, C, d].

    From the Gram matrix (cheap for all pairs): ||o_b - o_a||² = q_b + q_a - 2 o_b·o_a with
    float64 error below 2 γ_{d+3} (q_b + q_a) (q = ||o||²); the float32 roundings add at most
    u ||o_b - o_a|| + 1.01 u (||o_b|| + ||o_a||), u = 2^-24.
    """
    d = operand.shape[2]
    gram = torch.bmm(operand, operand.transpose(1, 2))  # [t, C, C]
    q = torch.diagonal(gram, dim1=1, dim2=2)  # [t, C]
    q_pair = q[:, :, None] + q[:, None, :]
    squared = (q_pair - 2 * gram).clamp_(min=0) + 2.02 * _gamma(d + 3, 2.0**-53) * q_pair
    norm = q.sqrt()
    u = 2.0**-24
    bound = squared.sqrt_() * (1 + u) + 1.01 * u * (norm[:, :, None] + norm[:, None, :])
    return bound.amax(dim=2).T * (1 + 2.0**-40)  # [a, t]; the margin covers the sqrt


def _row_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=1)


def _gamma(k: int, unit: float) -> float:
    return k * unit / (1 - k * unit)


def _float32_scale(x: torch.Tensor, distance: str) -> float | None:
    """The power of two s of `_Samples` (||y - c|| s <= 1); None where s² would leave the
    float64 range, i.e. features beyond about 1e±120 (then only float64 is used)."""
    if distance == "cosine":
        return 0.25  # unit vectors: ||y - c|| <= 2
    low, high = torch.aminmax(x)  # ||y - c|| <= 2 max ||y|| <= 2 sqrt(d) max |y_i|
    largest = max(-float(low), float(high))
    scale = _power_of_two_below(2 * math.sqrt(x.shape[1]) * largest)
    return scale if 2.0**-400 <= scale <= 2.0**400 else None


def _power_of_two_below(value: float) -> float:
    """2^-e with value * 2^-e in [0.5, 1) (1 for 0): an exact rescaling to magnitude ~1."""
    return 1.0 if value == 0 else math.ldexp(1.0, -math.frexp(value)[1])


@contextmanager
def _ieee_float32_matmul():
    """Full float32 matrix products (no TF32 or bf16 shortcuts): the error bound assumes them."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def mean_weights_float64(x: torch.Tensor, plan, distance: str, device, rule: str) -> np.ndarray:
    """`mean_weights` computed in float64 throughout, one trial at a time: the plain version
    the kernel must reproduce exactly (tests, benchmark), and its fallback for features beyond
    about 1e±120.

    A trial's scores are one matrix product [n', C], laid out as the kernel's float64 recheck
    has them. Not one product for several trials: the rounding of a product can depend on a
    column's position (seen with MKL on an AVX-512 CPU: columns past the last multiple of 4
    round otherwise), so identical prototypes, an exact tie, could then score differently.
    """
    dev = _checked_device(x, plan, distance, device, rule)
    x = x.to(dev, torch.float64)[torch.as_tensor(plan.rows, device=dev)]
    n, n_classes = x.shape[0], len(plan.classes)
    # Prototypes average the raw features; only the comparison uses unit vectors.
    x_cmp = torch.nn.functional.normalize(x, dim=1) if distance == "cosine" else x
    class_index = torch.as_tensor(plan.class_index, device=dev)
    own = class_index.view(n, 1, 1)
    per_sample = torch.zeros(n, n_classes, dtype=torch.float64, device=dev)
    for shot_pos in torch.as_tensor(plan.shots, device=dev)[:, None]:  # [1, C, m]
        scores = _scores(x_cmp, x[shot_pos].mean(dim=2), distance)  # [n', 1, C]
        weights = _float64_weights(scores, scores.gather(2, own), rule)
        weights[shot_pos.reshape(-1), 0] = 0.0  # shots are not tests
        per_sample += weights[:, 0]
    total = torch.zeros(n_classes, n_classes, dtype=torch.float64, device=dev)
    total.index_add_(0, class_index, per_sample)
    return _per_test(total, plan)


def _float64_weights(scores: torch.Tensor, own_score: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "sign":  # in place: `scores` is the largest tensor and unused later
        return scores.sub_(own_score).sign_()
    is_min = (scores == scores.amin(dim=2, keepdim=True)).double()
    return is_min / is_min.sum(dim=2, keepdim=True)


def _scores(x: torch.Tensor, prototypes: torch.Tensor, distance: str) -> torch.Tensor:
    """Scores [n, t, C] of samples x [n, d] against prototypes [t, C, d], ordered like the
    distance; for 'sqeuclidean' the per-sample constant ||x||² is dropped, for 'cosine'
    x is already unit-normalised."""
    t, n_classes, d = prototypes.shape
    flat = prototypes.reshape(t * n_classes, d)
    if distance == "sqeuclidean":
        # fused ||p||² - 2 x·p: one pass over the result instead of three
        scores = torch.addmm((flat * flat).sum(dim=1), x, flat.T, alpha=-2.0)
    else:
        unit = torch.nn.functional.normalize(flat, dim=1)
        scores = torch.addmm(unit.new_zeros(()), x, unit.T, beta=0.0, alpha=-1.0)
    return scores.view(len(x), t, n_classes)


def reference_pairwise_errors(features, plan, distance: str = "sqeuclidean") -> np.ndarray:
    """The pairwise error matrix of the shots of `plan` by its literal definition: a plain
    numpy loop over trials and class pairs, every distance computed directly in float64.

    Not used by the pipeline: tests and `benchmarks/bench_fewshot.py` validate the kernel
    (`fewshot.pairwise_prototype_errors`) against it on the same shots.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    x = torch.as_tensor(features).double().cpu().numpy()[plan.rows]
    n_classes = len(plan.classes)
    errors = np.zeros((n_classes, n_classes))
    for t in range(plan.n_trials):
        prototypes = [x[plan.shots[t, c]].mean(axis=0) for c in range(n_classes)]
        for a in range(n_classes):
            tests = x[plan.test_positions(t, a)]
            d_own = _plain_distance(tests, prototypes[a], distance)
            for b in range(n_classes):
                if b != a:
                    d_other = _plain_distance(tests, prototypes[b], distance)
                    errors[a, b] += np.mean((d_other < d_own) + 0.5 * (d_other == d_own))
    return errors / plan.n_trials


def _plain_distance(x: np.ndarray, p: np.ndarray, distance: str) -> np.ndarray:
    if distance == "sqeuclidean":
        return ((x - p) ** 2).sum(axis=1)
    x_norm = np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    p_norm = max(np.linalg.norm(p), 1e-12)
    return 1.0 - (x @ p) / (x_norm * p_norm)
