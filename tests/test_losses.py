"""Each loss against its published formula written out with loops over samples and pairs."""

import math

import pytest
import torch

from ssltrace.losses import (
    barlow_twins_loss,
    byol_loss,
    cross_entropy_loss,
    moco_infonce_loss,
    nt_xent_loss,
    simsiam_loss,
    vicreg_loss,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def cos(a, b):
    return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))


# --- NT-Xent (SimCLR, Chen et al. 2020, Algorithm 1) -----------------------------------------


def nt_xent_reference(z1, z2, t):
    """The paper's loop: samples interleaved as 2k, 2k+1; l(i, j) over k != i; mean over 2N."""
    n = z1.shape[0]
    z = [None] * (2 * n)
    for k in range(n):
        z[2 * k], z[2 * k + 1] = z1[k], z2[k]

    def ell(i, j):
        denominator = sum(math.exp(cos(z[i], z[k]) / t) for k in range(2 * n) if k != i)
        return -math.log(math.exp(cos(z[i], z[j]) / t) / denominator)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def test_nt_xent_hand_computed_orthogonal_case():
    # Views identical and orthogonal: each anchor has similarity 1 to its positive and 0 to the
    # two negatives, so l = -1/t + log(exp(1/t) + 2), with t = 1: log(e + 2) - 1.
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    out = nt_xent_loss(z, z.clone(), temperature=1.0)
    assert out["loss"].item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    assert out["invariance"].item() == pytest.approx(-1.0, abs=1e-6)
    # Seed 004 §2.1: log sum over the other view's j != i: one negative at similarity 0.
    assert out["regularisation"].item() == pytest.approx(0.0, abs=1e-6)
    exact = nt_xent_loss(z, z.clone(), temperature=1.0, split="denominator")
    assert exact["regularisation"].item() == pytest.approx(math.log(math.e + 2), abs=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_nt_xent_matches_published_loop(temperature):
    z1, z2 = randn(5, 7, seed=1), randn(5, 7, seed=2)
    out = nt_xent_loss(z1, z2, temperature)
    assert out["loss"].item() == pytest.approx(nt_xent_reference(z1, z2, temperature), rel=1e-9)
    # Alignment term by itself: -mean over anchors of cos(positive) / t.
    alignment = -sum(cos(z1[k], z2[k]) for k in range(5)) * 2 / (10 * temperature)
    assert out["invariance"].item() == pytest.approx(alignment, rel=1e-9)
    # Seed 004 §2.1's regularisation, written out: both views as anchors, other view's j != i.
    cross = [
        math.log(sum(math.exp(cos(a[i], b[j]) / temperature) for j in range(5) if j != i))
        for a, b in ((z1, z2), (z2, z1))
        for i in range(5)
    ]
    assert out["regularisation"].item() == pytest.approx(sum(cross) / 10, rel=1e-9)
    exact = nt_xent_loss(z1, z2, temperature, split="denominator")
    parts = exact["invariance"] + exact["regularisation"]
    assert parts.item() == pytest.approx(exact["loss"].item(), rel=1e-12)


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="z1 and z2 must have the same shape"):
        nt_xent_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nt_xent_loss(torch.ones(4, 3), torch.ones(4, 3), temperature=0.0)
    with pytest.raises(ValueError, match="z1 must be a 2-D tensor"):
        nt_xent_loss(torch.ones(4), torch.ones(4))


# --- SimSiam (Chen & He 2021, Algorithm 1) -------------------------------------------------


def test_simsiam_matches_published_formula():
    p1, p2, z1, z2 = (randn(6, 4, seed=s) for s in range(4))
    expected = sum(-0.5 * cos(p1[i], z2[i]) - 0.5 * cos(p2[i], z1[i]) for i in range(6)) / 6
    out = simsiam_loss(p1, p2, z1, z2)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-9)
    assert out["invariance"].item() == out["loss"].item()
    assert out["regularisation"].item() == 0.0


def test_simsiam_stop_gradient_blocks_the_target_branch():
    p1, p2, z1, z2 = (randn(6, 4, seed=s).requires_grad_() for s in range(4))
    simsiam_loss(p1, p2, z1, z2, stop_gradient=True)["loss"].backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad is not None and p1.grad.abs().sum() > 0
    simsiam_loss(p1, p2, z1, z2, stop_gradient=False)["loss"].backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0


# --- BYOL (Grill et al. 2020, eq. 2) --------------------------------------------------------


def test_byol_matches_published_formula():
    q1, q2, t1, t2 = (randn(5, 3, seed=s) for s in range(4))

    def normalised_mse(q, t):
        qn, tn = q / math.sqrt(float(q @ q)), t / math.sqrt(float(t @ t))
        return sum(float(qn[d] - tn[d]) ** 2 for d in range(q.shape[0]))

    expected = sum(normalised_mse(q1[i], t2[i]) + normalised_mse(q2[i], t1[i]) for i in range(5))
    out = byol_loss(q1, q2, t1, t2)
    assert out["loss"].item() == pytest.approx(expected / 5, rel=1e-9)
    assert out["regularisation"].item() == 0.0


def test_byol_sends_no_gradient_to_the_target():
    q1, q2, t1, t2 = (randn(5, 3, seed=s).requires_grad_() for s in range(4))
    byol_loss(q1, q2, t1, t2)["loss"].backward()
    assert t1.grad is None and t2.grad is None and q1.grad is not None


# --- VICReg (Bardes et al. 2022, eqs. 1-6) -------------------------------------------------


def vicreg_reference(z1, z2, lam, mu, nu, eps=1e-4, variance_mode="sum"):
    n, d = z1.shape

    def column(z, j):
        return [float(z[i, j]) for i in range(n)]

    def variance(z):
        total = 0.0
        for j in range(d):
            values = column(z, j)
            mean = sum(values) / n
            var = sum((v - mean) ** 2 for v in values) / (n - 1)
            total += max(0.0, 1 - math.sqrt(var + eps))
        return total / d

    def covariance(z):
        means = [sum(column(z, j)) / n for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    c = sum((z[i, j] - means[j]) * (z[i, k] - means[k]) for i in range(n))
                    total += (float(c) / (n - 1)) ** 2
        return total / d

    invariance = sum(float(z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    return (
        lam * invariance,
        mu * (variance(z1) + variance(z2)) / (2 if variance_mode == "mean" else 1)
        + nu * (covariance(z1) + covariance(z2)),
    )


def test_vicreg_matches_published_formula():
    # Scaled so some dimensions have std below 1 (the hinge is active) and some above.
    z1 = randn(8, 5, seed=1) * torch.tensor([0.3, 0.8, 1.5, 2.0, 0.5], dtype=torch.float64)
    z2 = randn(8, 5, seed=2) * 0.7
    invariance, regularisation = vicreg_reference(z1, z2, 25.0, 25.0, 1.0)
    out = vicreg_loss(z1, z2)
    assert out["invariance"].item() == pytest.approx(invariance, rel=1e-9)
    assert out["regularisation"].item() == pytest.approx(regularisation, rel=1e-9)
    assert out["loss"].item() == pytest.approx(invariance + regularisation, rel=1e-9)


def test_vicreg_authors_code_averages_the_variance_terms():
    z1 = randn(8, 5, seed=1) * 0.4  # every std below 1: the hinge is active everywhere
    z2 = randn(8, 5, seed=2) * 0.7
    _, paper = vicreg_reference(z1, z2, 25.0, 25.0, 0.0)
    _, code = vicreg_reference(z1, z2, 25.0, 25.0, 0.0, variance_mode="mean")
    assert vicreg_loss(z1, z2, cov_coeff=0.0)["regularisation"].item() == pytest.approx(paper)
    out = vicreg_loss(z1, z2, cov_coeff=0.0, variance="mean")
    assert out["regularisation"].item() == pytest.approx(code) and code == pytest.approx(paper / 2)


def test_vicreg_coefficients_weight_their_terms():
    z1, z2 = randn(6, 3, seed=3), randn(6, 3, seed=4)
    inv, reg = vicreg_reference(z1, z2, 2.0, 0.0, 3.0)
    out = vicreg_loss(z1, z2, sim_coeff=2.0, std_coeff=0.0, cov_coeff=3.0)
    assert out["invariance"].item() == pytest.approx(inv, rel=1e-9)
    assert out["regularisation"].item() == pytest.approx(reg, rel=1e-9)


# --- Barlow Twins (Zbontar et al. 2021, eqs. 1-2) ------------------------------------------


def barlow_reference(z1, z2, lam, eps=1e-5):
    n, d = z1.shape

    def standardise(z):
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            values = [float(z[b, j]) for b in range(n)]
            mean = sum(values) / n
            var = sum((v - mean) ** 2 for v in values) / n
            for b in range(n):
                out[b][j] = (values[b] - mean) / math.sqrt(var + eps)
        return out

    a, b = standardise(z1), standardise(z2)
    c = [[sum(a[s][i] * b[s][j] for s in range(n)) / n for j in range(d)] for i in range(d)]
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on, lam * off


def test_barlow_twins_matches_published_formula():
    z1, z2 = randn(7, 4, seed=5) * 3 + 1, randn(7, 4, seed=6)
    on, off = barlow_reference(z1, z2, 5e-3)
    out = barlow_twins_loss(z1, z2, lambd=5e-3)
    assert out["invariance"].item() == pytest.approx(on, rel=1e-9)
    assert out["regularisation"].item() == pytest.approx(off, rel=1e-9)
    assert out["loss"].item() == pytest.approx(on + off, rel=1e-9)


def test_barlow_twins_identical_decorrelated_views_cost_nothing():
    # Orthogonal +-1 columns: standardised, their correlation matrix is the identity.
    z = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    out = barlow_twins_loss(z, z.clone(), lambd=1.0, eps=0.0)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-12)


# --- MoCo (He et al. 2020, eq. 1) ----------------------------------------------------------


def test_moco_infonce_matches_published_formula():
    q, k, queue = randn(4, 3, seed=7), randn(4, 3, seed=8), randn(6, 3, seed=9)
    queue = queue / queue.norm(dim=1, keepdim=True)  # the queue holds normalised keys
    t = 0.2
    expected = 0.0
    for i in range(4):
        qn = q[i] / math.sqrt(float(q[i] @ q[i]))
        kn = k[i] / math.sqrt(float(k[i] @ k[i]))
        positive = math.exp(float(qn @ kn) / t)
        negatives = sum(math.exp(float(qn @ queue[j]) / t) for j in range(6))
        expected += -math.log(positive / (positive + negatives))
    out = moco_infonce_loss(q, k, queue, t)
    assert out["loss"].item() == pytest.approx(expected / 4, rel=1e-9)
    parts = out["invariance"] + out["regularisation"]
    assert parts.item() == pytest.approx(out["loss"].item(), rel=1e-12)


def test_moco_rejects_a_queue_of_the_wrong_width():
    with pytest.raises(ValueError, match="queue must be"):
        moco_infonce_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(5, 4))


# --- Cross-entropy -------------------------------------------------------------------------


def test_cross_entropy_matches_formula_and_has_no_split():
    logits, labels = randn(5, 4, seed=10), torch.tensor([0, 3, 1, 1, 2])
    expected = 0.0
    for i in range(5):
        log_sum = math.log(sum(math.exp(float(v)) for v in logits[i]))
        expected += -float(logits[i, labels[i]]) + log_sum
    out = cross_entropy_loss(logits, labels)
    assert out["loss"].item() == pytest.approx(expected / 5, rel=1e-9)
    assert math.isnan(out["invariance"].item()) and math.isnan(out["regularisation"].item())
    with pytest.raises(ValueError, match="labels must be"):
        cross_entropy_loss(logits, labels[:3])
