"""The auto-encoder's loss (seed 003, Methods, "Auto-Encoder"): L2 reconstruction of the input
image plus 1e-4 x the L1 norm of the 128-d hidden vector.

With x the (normalised) input image [B, C, H, W], x' its reconstruction and h the hidden
vectors [B, K], both terms are normalised by their number of elements, as the authors' code
computes them (neuroailab/unsup_vvs, loss_utils.py: `tf.nn.l2_loss(x' - x) / numel` and
`w * reduce_sum(|h|) / numel(h)`):

    reconstruction = sum_{b,c,y,x} (x'_bcyx - x_bcyx)^2 / 2 / (B C H W)
    sparsity       = w * sum_{b,k} |h_bk| / (B K)

so the L1 term is w/K times the per-image L1 norm of the paper's wording, averaged over the
batch (with the paper's norm the penalty would be K = 128 times larger).

Split: `invariance` is the reconstruction term (what the code must keep of its own image),
`regularisation` the L1 term (what limits the code); they add up to `loss`.
"""

from __future__ import annotations

import torch

from ssltrace.losses._checks import check_positive


def autoencoder_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor, l1_weight: float
) -> dict:
    """Reconstruction + L1 sparsity (module docstring); `l1_weight` >= 0."""
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"reconstruction and target must have the same shape, got "
            f"{tuple(reconstruction.shape)} and {tuple(target.shape)}"
        )
    if hidden.ndim != 2 or len(hidden) != len(target):
        raise ValueError(
            f"hidden must be [batch, dim] with batch {len(target)}, got {tuple(hidden.shape)}"
        )
    if l1_weight != 0:
        check_positive("l1_weight", l1_weight)
    invariance = (reconstruction - target).pow(2).mean() / 2
    regularisation = l1_weight * hidden.abs().mean()
    loss = invariance + regularisation
    return {"loss": loss, "invariance": invariance, "regularisation": regularisation}
