"""Depth prediction's loss (seed 003, Methods, "Depth Prediction"): L2 between the predicted
depth image and the ground-truth depth standardised within each image.

With d the ground-truth depth of image b [H, W], its per-image standardisation
t = (d - mean(d)) / std(d) (mean 0 and standard deviation 1 within the image, as the seed
says; std over the image's pixels, population form, floored at 1e-6 so a flat image is all 0)
and p the prediction [H, W],

    loss = mean_{b, y, x} (p_byx - t_byx)^2,

the squared L2 norm of the difference per pixel, averaged over pixels and images so that the
loss does not scale with the image size.

Split: the whole loss is `invariance` and `regularisation` is 0: a dense prediction of a
property of the scene, with no views to make invariant and no term against collapse (the
target rules a constant output out), as relative position and DeepCluster.
"""

from __future__ import annotations

import torch

MIN_STD = 1e-6


def standardise_depth(depth: torch.Tensor) -> torch.Tensor:
    """Per image [B, H, W]: zero mean and unit (population) standard deviation."""
    if depth.ndim != 3:
        raise ValueError(f"depth must be [batch, height, width], got {tuple(depth.shape)}")
    depth = depth.float()
    mean = depth.mean(dim=(1, 2), keepdim=True)
    std = depth.std(dim=(1, 2), keepdim=True, correction=0).clamp(min=MIN_STD)
    return (depth - mean) / std


def depth_loss(prediction: torch.Tensor, depth: torch.Tensor) -> dict:
    """Mean squared difference of `prediction` [B, H, W] and standardised `depth` [B, H, W]."""
    if prediction.shape != depth.shape:
        raise ValueError(
            f"prediction and depth must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(depth.shape)}"
        )
    loss = (prediction.float() - standardise_depth(depth)).pow(2).mean()
    return {"loss": loss, "invariance": loss, "regularisation": torch.zeros_like(loss)}
