"""Colourisation losses (Zhang, Isola & Efros, 2016, "Colorful Image Colorization", §2.1).

The network sees the lightness L of an image and predicts its colour channels ab per pixel.

Quantised ab (the paper's default; `classification_loss`). ab space is quantised on a grid
of 10 into the Q = 313 bins that are in the sRGB gamut (`ab_bins`: the centres of the
paper's `pts_in_hull.npy`, written out as one b range per a column). The ground truth Y of a
pixel is soft-encoded (eq. 2's Z = H^-1(Y)): its `neighbours` nearest bins, weighted by a
Gaussian kernel of the distance with sigma = `sigma` (5) and normalised to sum to 1 (the paper
uses the 5 nearest; its Caffe layer NNEncLayer uses 10). The loss of a pixel is the rebalanced
multinomial cross-entropy (eq. 2),

    l = -v(Z) sum_q Z_q log softmax(logits)_q,     v(Z) = w_{q*},  q* = argmax_q Z_q,

with the class-rebalancing weights (eqs. 3-4; `rebalancing_weights`)

    w ∝ ((1 - lambda) p~ + lambda / Q)^-1,     sum_q p~_q w_q = 1,

p~ the empirical distribution of the training set's colours over the bins, smoothed with a
Gaussian kernel of sigma 5 (`smoothed_prior`), lambda = 1/2. As in the Caffe code
(PriorFactor), the uniform part is spread over the bins with p~ > 0. lambda = 1 gives w = 1:
plain soft cross-entropy. Images without colour are skipped as the Caffe code's
NonGrayMaskLayer does: an image counts only if some |a| or |b| of its target exceeds
`grey_threshold` (5) (`colourful`). The loss is the mean of l over all target pixels of the
batch (skipped images contribute 0).

Regression (`regression_loss`; the paper's eq. 1 baseline): 1/2 ||Y - Y'||^2 per pixel, the
mean over all target pixels as above (skipped images contribute 0).

Split: colourisation has no views to make invariant and no term against collapse (a
prediction of the input's own colours cannot collapse); the whole prediction loss is
`invariance`, `regularisation` is 0, as for DeepCluster's cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_positive

AB_GRID = 10
# The 313 in-gamut bins of Zhang et al.'s resources/pts_in_hull.npy: for each a (step 10), the
# lowest and highest b (step 10, every value between is a bin), in the file's order.
HULL = (
    (-90, 50, 90), (-80, 20, 90), (-70, 0, 90), (-60, -20, 90), (-50, -30, 100),
    (-40, -40, 100), (-30, -50, 100), (-20, -50, 100), (-10, -60, 100), (0, -70, 100),
    (10, -80, 90), (20, -80, 90), (30, -90, 90), (40, -100, 90), (50, -100, 80),
    (60, -110, 80), (70, -110, 80), (80, -110, 70), (90, -110, 70), (100, -90, 0),
)  # fmt: skip


def ab_bins() -> torch.Tensor:
    """The Q = 313 bin centres (a, b), float32 [313, 2], in pts_in_hull.npy's order."""
    rows = [(a, b) for a, low, high in HULL for b in range(low, high + 1, AB_GRID)]
    return torch.tensor(rows, dtype=torch.float32)


def _distances(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Squared distances [N, Q] between ab points [N, 2] and bin centres [Q, 2]."""
    if ab.ndim != 2 or ab.shape[1] != 2:
        raise ValueError(f"ab must be [pixels, 2], got {tuple(ab.shape)}")
    diff = ab[:, None, :] - bins.to(ab)[None, :, :]
    return diff.pow(2).sum(dim=2)


def nearest_bin(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin of each ab point [N, 2].

    The bins lie on the grid of AB_GRID, so the nearest grid point is the coordinate-wise
    rounding, and when that point is a bin it is the nearest bin (every sRGB colour's is):
    a table lookup. The other points are searched exhaustively.
    """
    if ab.ndim != 2 or ab.shape[1] != 2:
        raise ValueError(f"ab must be [pixels, 2], got {tuple(ab.shape)}")
    steps = torch.round(bins / AB_GRID).long()
    if not torch.equal(steps.to(bins) * AB_GRID, bins):
        return _distances(ab, bins).argmin(dim=1)
    low = steps.min(dim=0).values
    side = int((steps.max(dim=0).values - low).max()) + 1
    table = torch.full((side, side), -1, dtype=torch.long, device=ab.device)
    table[(steps[:, 0] - low[0]).to(ab.device), (steps[:, 1] - low[1]).to(ab.device)] = (
        torch.arange(len(bins), device=ab.device)
    )
    cell = torch.round(ab / AB_GRID).long() - low.to(ab.device)
    inside = ((cell >= 0) & (cell < side)).all(dim=1)
    cell = cell.clamp(0, side - 1)
    index = torch.where(inside, table[cell[:, 0], cell[:, 1]], -1)
    missing = index < 0
    if missing.any():
        index[missing] = _distances(ab[missing], bins).argmin(dim=1)
    return index


def soft_encode(
    ab: torch.Tensor, bins: torch.Tensor, neighbours: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [N, k], weights [N, k]) of the k nearest bins, Gaussian-weighted, summing to 1;
    column 0 is the nearest bin."""
    check_positive("sigma", sigma)
    if not 1 <= neighbours <= len(bins):
        raise ValueError(f"neighbours must be in [1, {len(bins)}], got {neighbours}")
    squared, index = _distances(ab, bins).topk(neighbours, dim=1, largest=False, sorted=True)
    weights = torch.softmax(-squared / (2 * sigma**2), dim=1)  # exp(-d^2/2s^2), normalised
    return index, weights


def smoothed_prior(counts: torch.Tensor, bins: torch.Tensor, sigma: float) -> torch.Tensor:
    """p~: bin counts [Q] as a distribution, smoothed by a Gaussian kernel of `sigma` in ab
    units between bin centres and renormalised, float64 [Q]."""
    check_positive("sigma", sigma)
    p = counts.double() / counts.sum()
    kernel = torch.exp(-_distances(bins.double(), bins.double()) / (2 * sigma**2))
    smooth = kernel @ p
    return smooth / smooth.sum()


def rebalancing_weights(prior: torch.Tensor, mix: float) -> torch.Tensor:
    """w_q ∝ 1 / ((1 - mix) p~_q + mix / Q'), scaled so sum_q p~_q w_q = 1 (eqs. 3-4); Q' =
    the bins with p~ > 0, as the Caffe code's PriorFactor."""
    if not 0 <= mix <= 1:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    prior = prior.double()
    seen = prior > 0
    uniform = seen.double() / seen.sum()
    weights = torch.where(seen, 1 / ((1 - mix) * prior + mix * uniform), torch.zeros_like(prior))
    return weights / (prior * weights).sum()


def colourful(ab_maps: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per image [B] of ab maps [B, 2, h, w]: any |a| or |b| above `threshold` (NonGrayMask)."""
    return (ab_maps.abs() > threshold).flatten(1).any(dim=1)


def classification_loss(
    logits: torch.Tensor,
    ab: torch.Tensor,
    bins: torch.Tensor,
    weights: torch.Tensor,
    neighbours: int,
    sigma: float,
    mask: torch.Tensor | None = None,
) -> dict:
    """Rebalanced soft cross-entropy (eq. 2) of `logits` [N, Q] against ab targets [N, 2]
    (ab units), class weights `weights` [Q]; `mask` [N] (bool) drops pixels."""
    if logits.ndim != 2 or logits.shape[1] != len(bins) or len(logits) != len(ab):
        raise ValueError(
            f"logits must be [{len(ab)}, {len(bins)}] (pixels, bins), got {tuple(logits.shape)}"
        )
    index, soft = soft_encode(ab.float(), bins, neighbours, sigma)
    # Z as a dense [N, Q] target: no gather on the gradient's path (its CUDA backward is an
    # atomic scatter-add).
    log_p = F.log_softmax(logits.float(), dim=1)
    target = torch.zeros_like(log_p).scatter_(1, index, soft.to(log_p))
    per_pixel = -(target * log_p).sum(dim=1) * weights.to(log_p)[index[:, 0]]
    if mask is not None:
        per_pixel = per_pixel * mask.to(per_pixel)
    return _parts(per_pixel.mean())


def regression_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> dict:
    """1/2 ||target - prediction||^2 per pixel (eq. 1), mean over pixels [N, 2]; `mask` [N]."""
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(
            f"prediction and target must both be [pixels, 2], got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    per_pixel = (prediction.float() - target.float()).pow(2).sum(dim=1) / 2
    if mask is not None:
        per_pixel = per_pixel * mask.to(per_pixel)
    return _parts(per_pixel.mean())


def _parts(loss: torch.Tensor) -> dict:
    return {"loss": loss, "invariance": loss, "regularisation": torch.zeros_like(loss)}
