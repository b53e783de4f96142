"""Local Label Propagation (Zhuang, Ding, Murli & Yamins, 2019, §3): labels propagated from
the labelled images to the rest through the embedding's local geometry, then a
confidence-weighted categorisation and aggregation loss.

Written from the paper as described below; the authors' code (neuroailab/LocalLabelPropagation)
was not available to compare details such as the density's neighbourhood and the exact
confidence against.

Notation as Local Aggregation's (`ssltrace.losses.instance`): V the memory bank [n, D] of
l2-normalised embeddings, t the temperature, s_j = v . V_j / t.

Propagation (once per epoch, from the bank). For a labelled image j, its local density is
the summed similarity to its `density_k` nearest other bank entries,

    rho_j = sum_{k in N_T(j)} V_j . V_k      (clamped to >= 1e-6: a weight needs rho > 0),

and an unlabelled image i takes its K = `propagation_k` nearest labelled images N_K(i) (by
cosine) as voters, with weights

    w_ij = exp(V_i . V_j / t) / rho_j,

so a labelled image close to i but sitting in a dense region votes less (it would otherwise
claim the whole region). Pseudo-label and confidence:

    yhat_i = argmax_c sum_{j in N_K(i), y_j = c} w_ij,    c_i = (that sum) / sum_{j in N_K(i)} w_ij.

Labelled images keep their label with confidence 1.

Loss of a batch (the paper's per-example loss, averaged over the batch): with B_i the
`background_k` nearest bank entries (background neighbours, as LA), C_i = the bank entries
whose (pseudo-)label is yhat_i, and z_i the category logits,

    l_i = c_i [ -log( P(C_i ∩ B_i | v_i) / P(B_i | v_i) ) + CE(z_i, yhat_i) ].

As LA, 1e-7 is added to the ratio (an empty intersection stays finite). Split: `invariance` =
mean c_i [ -log( sum_{C∩B} exp(s) + 1e-7 sum_B exp(s) ) + CE ] (pull towards the images and
the class of the same pseudo-label), `regularisation` = mean c_i log sum_B exp(s) (push from
the background); they add up to `loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_positive
from ssltrace.losses.instance import (
    LA_EPSILON,
    _check_bank,
    background_neighbours,
    close_in_background,
)

MIN_DENSITY = 1e-6
CHUNK = 4096  # rows of a similarity matrix at once: bounds memory at paper scale


def local_density(bank: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """rho_j = sum of V_j . V_k over the `k` nearest other entries of each bank row in `rows`."""
    if not 1 <= k < len(bank):
        raise ValueError(f"density_k must be in [1, {len(bank) - 1}] (bank size - 1), got {k}")
    out = []
    for chunk in rows.split(CHUNK):
        sims = bank[chunk] @ bank.T
        sims[torch.arange(len(chunk), device=sims.device), chunk] = float("-inf")  # not itself
        out.append(torch.topk(sims, k, dim=1).values.sum(dim=1))
    return torch.cat(out).clamp(min=MIN_DENSITY)


@torch.no_grad()
def propagate_labels(
    bank: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    propagation_k: int,
    density_k: int,
    temperature: float = 0.07,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pseudo-labels [n], confidences [n]) of every bank entry from `labels` [n] (-1 =
    unlabelled): labelled entries keep theirs with confidence 1 (module docstring)."""
    check_positive("temperature", temperature)
    if labels.shape != (len(bank),):
        raise ValueError(f"labels must be [{len(bank)}] (-1 = unlabelled), got {labels.shape}")
    known = torch.nonzero(labels >= 0).flatten()
    if len(known) == 0:
        raise ValueError("label propagation needs at least one labelled image")
    k = min(propagation_k, len(known))
    density = local_density(bank, known, density_k)
    pseudo = labels.clone()
    confidence = torch.ones(len(bank), dtype=bank.dtype, device=bank.device)
    unknown = torch.nonzero(labels < 0).flatten()
    for chunk in unknown.split(CHUNK):
        sims, nearest = torch.topk(bank[chunk] @ bank[known].T, k, dim=1)
        weights = torch.exp(sims / temperature) / density[nearest]
        votes = torch.zeros(len(chunk), n_classes, dtype=bank.dtype, device=bank.device)
        votes.scatter_add_(1, labels[known][nearest], weights)
        best = votes.max(dim=1)
        pseudo[chunk] = best.indices
        confidence[chunk] = best.values / weights.sum(dim=1)
    return pseudo, confidence


def local_label_propagation_loss(
    v: torch.Tensor,
    logits: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    pseudo_labels: torch.Tensor,
    confidence: torch.Tensor,
    background_k: int,
    temperature: float = 0.07,
) -> dict:
    """Confidence-weighted aggregation + categorisation of a batch (module docstring).
    `pseudo_labels` [n] and `confidence` [n] cover the whole bank; `index` the batch's rows."""
    v, bank = _check_bank(v, bank, index)
    if pseudo_labels.shape != (len(bank),) or confidence.shape != (len(bank),):
        raise ValueError(f"pseudo_labels and confidence must be [{len(bank)}] (the bank's rows)")
    if logits.ndim != 2 or len(logits) != len(v):
        raise ValueError(f"logits must be [{len(v)}, classes], got {tuple(logits.shape)}")
    s, background = background_neighbours(v, bank, background_k, temperature)
    close = close_in_background(pseudo_labels[None], index, background)
    log_background = torch.logsumexp(s, dim=1)
    log_close = torch.logsumexp(s.masked_fill(~close, float("-inf")), dim=1)
    ratio = torch.exp(log_close - log_background)
    target = pseudo_labels[index]
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    c = confidence[index].to(v.dtype)
    invariance = (c * (-torch.log(ratio + LA_EPSILON) - log_background + ce)).mean()
    regularisation = (c * log_background).mean()
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }
