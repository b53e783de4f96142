"""Neural predictivity (ssltrace.analysis.predictivity) against planted answers and against
scikit-learn: the ceiling recovers a planted reliability, ceiled predictivity is ~1 for the
generating features and ~0 for random ones, ridge/PCA/PLS equal scikit-learn on small cases,
the factorised readout recovers a planted spatial mask."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from sklearn.cross_decomposition import PLSRegression
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

from ssltrace.analysis.predictivity import (
    NeuroidScores,
    PLSReadout,
    PredictivitySettings,
    RidgeReadout,
    cross_validated_r,
    cv_plan,
    fit_factorised,
    layer_predictivity,
    pca_scores,
    region_summaries,
    split_half_reliability,
    stratified_folds,
    summary_rows,
    ttest_matrix,
)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small matrices on a shared 2-core machine: BLAS threads only contend (see cli._threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def planted(n_images=400, n_features=20, n_neuroids=40, reps=6, seed=0):
    """Responses = a linear map of features A + trial noise at a known reliability."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_images, n_features))
    signal = a @ rng.standard_normal((n_features, n_neuroids))
    signal = (signal - signal.mean(0)) / signal.std(0)
    truth = rng.uniform(0.4, 0.9, n_neuroids)
    sigma = np.sqrt(reps * (1 - truth) / truth)  # reliability of the mean over reps = truth
    responses = signal + 3.0 + rng.standard_normal((reps, n_images, n_neuroids)) * sigma
    groups = np.arange(n_images) % 16
    return a, responses, truth, groups, rng


# ----------------------------------------------------------------------------- ceilings
def test_ceiling_recovers_planted_reliability():
    _, responses, truth, _, _ = planted(n_images=400, n_neuroids=60)
    estimate = split_half_reliability(responses, n_splits=50)
    error = estimate - truth
    assert abs(error.mean()) < 0.02, error.mean()  # unbiased over neuroids
    assert np.abs(error).max() < 0.12, np.abs(error).max()  # each within sampling error


def loop_split_half(responses, n_splits, rng):
    """The definition, one presentation and neuroid at a time (slow, obviously right)."""
    reps, n_images, n_neuroids = responses.shape
    out = np.zeros(n_neuroids)
    for _ in range(n_splits):
        for n in range(n_neuroids):
            a, b = [], []
            for p in range(n_images):
                present = np.flatnonzero(~np.isnan(responses[:, p, n]))
                half = len(present) // 2
                if half:
                    chosen = rng.permutation(present)
                    a.append(responses[chosen[:half], p, n].mean())
                    b.append(responses[chosen[half : 2 * half], p, n].mean())
            r = np.corrcoef(a, b)[0, 1]
            out[n] += 2 * r / (1 + r) / n_splits
    return out


def test_ceiling_equals_the_definition_computed_one_by_one():
    _, responses, _, _, rng = planted(n_images=30, n_neuroids=2, reps=5)
    responses[rng.random(responses.shape) < 0.15] = np.nan
    responses[0, :, 0] = 1.0  # a neuroid whose first repetition is always present
    fast = split_half_reliability(responses, n_splits=400, seed=1)
    slow = loop_split_half(responses, 200, np.random.default_rng(2))
    np.testing.assert_allclose(fast, slow, atol=0.02)


def test_ceiling_of_two_identical_repetitions_is_one():
    _, responses, _, _, _ = planted(reps=2, n_neuroids=5)
    responses[1] = responses[0]
    np.testing.assert_allclose(split_half_reliability(responses, n_splits=3), 1.0)


def test_ceiling_handles_missing_repetitions_per_neuroid():
    _, responses, truth, _, rng = planted(reps=8, n_neuroids=30)
    holes = responses.copy()
    drop = rng.random(holes.shape) < 0.2
    drop[0] = False  # keep one repetition of everything
    holes[drop] = np.nan
    estimate = split_half_reliability(holes, n_splits=30)
    assert np.isfinite(estimate).all()
    # fewer repetitions: reliability of ~6.6 instead of 8 (Spearman-Brown), within error
    expected = truth * 0.825 / (1 + (0.825 - 1) * truth)
    assert abs((estimate - expected).mean()) < 0.03


def test_ceiling_needs_two_repetitions():
    with pytest.raises(ValueError, match="1 repetition.*raw r"):
        split_half_reliability(np.zeros((1, 5, 2)))


# ----------------------------------------------------------------------------- planted fits
@pytest.mark.parametrize("readout", ["ridge_pca", "pls_pca"])
def test_ceiled_predictivity_one_for_generating_features_zero_for_random(readout):
    a, responses, truth, groups, rng = planted()
    ceiling = split_half_reliability(responses, n_splits=30)
    y = responses.mean(0)
    region = np.repeat(["V4", "IT"], 20)
    partial = np.c_[a[:, :10], rng.standard_normal((len(a), 10))]  # half the generators
    scores = {
        name: layer_predictivity(x, y, groups, region, readout, ceiling)
        for name, x in (("A", a), ("partial", partial), ("random", rng.standard_normal(a.shape)))
    }
    generating = np.median(scores["A"].ceiled)
    assert 0.93 < generating < 1.07, generating
    assert np.median(scores["partial"].ceiled) < generating - 0.2
    assert abs(np.median(scores["random"].ceiled)) < 0.1
    np.testing.assert_allclose(scores["A"].ceiled, scores["A"].raw / np.sqrt(ceiling))


def test_ridge_with_kfold_inner_cv_equals_scikit_learn_grid_search():
    a, responses, _, groups, _ = planted(n_images=120, n_features=8, n_neuroids=3)
    x, y = a[:, :6], responses.mean(0)
    settings = PredictivitySettings(alphas=(0.1, 3.0, 100.0, 3000.0), inner_folds=3)
    train, test = stratified_folds(groups, 4)[0]
    prediction, alphas = RidgeReadout(settings).nested(x[train], y[train], groups[train], x[test])
    inner = stratified_folds(groups[train], 3, settings.seed + 1)
    for n in range(y.shape[1]):
        search = GridSearchCV(
            Ridge(), {"alpha": list(settings.alphas)}, cv=inner, scoring="neg_mean_squared_error"
        ).fit(x[train], y[train, n])
        assert alphas[n] == pytest.approx(search.best_params_["alpha"])
        np.testing.assert_allclose(prediction[:, n], search.predict(x[test]), rtol=1e-7)


def test_ridge_leave_one_out_and_fixed_alphas_equal_scikit_learn():
    from sklearn.linear_model import RidgeCV

    a, responses, _, groups, _ = planted(n_images=100, n_features=6, n_neuroids=3)
    y = responses.mean(0)
    settings = PredictivitySettings(alphas=(0.1, 10.0, 1000.0), inner_folds="loo")
    readout = RidgeReadout(settings)
    prediction, alphas = readout.nested(a[:80], y[:80], groups[:80], a[80:])
    reference = RidgeCV(alphas=settings.alphas, alpha_per_target=True).fit(a[:80], y[:80])
    np.testing.assert_allclose(prediction, reference.predict(a[80:]), rtol=1e-7)
    fixed = readout.fit_predict(a[:80], y[:80], a[80:], np.array([0.1, 10.0, 1000.0]))
    for n, alpha in enumerate((0.1, 10.0, 1000.0)):
        expected = Ridge(alpha=alpha).fit(a[:80], y[:80, n]).predict(a[80:])
        np.testing.assert_allclose(fixed[:, n], expected, rtol=1e-6)


@pytest.mark.parametrize("n_features", [12, 70])  # more samples than features, and fewer
def test_ridge_leave_one_out_equals_explicit_leave_one_out_refits(n_features):
    """The per-neuroid alpha and the predictions equal n explicit refits per alpha (scikit-
    learn `Ridge` on every leave-one-out training set), in the SVD and the Gram regimes."""
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, n_features))
    y = x[:, :3] @ rng.standard_normal((3, 4)) + rng.standard_normal((60, 4)) * [0.3, 1, 3, 10]
    alphas = (0.01, 1.0, 30.0, 1000.0)
    readout = RidgeReadout(PredictivitySettings(alphas=alphas, inner_folds="loo"))
    prediction, chosen = readout.nested(x[:50], y[:50], np.zeros(50), x[50:])
    for n in range(y.shape[1]):
        errors = [
            (
                (cross_val_predict(Ridge(alpha), x[:50], y[:50, n], cv=LeaveOneOut()) - y[:50, n])
                ** 2
            ).sum()
            for alpha in alphas
        ]
        best = alphas[int(np.argmin(errors))]
        assert chosen[n] == best
        expected = Ridge(alpha=best).fit(x[:50], y[:50, n]).predict(x[50:])
        np.testing.assert_allclose(prediction[:, n], expected, rtol=1e-6, atol=1e-9)


def test_pca_scores_equal_scikit_learn_up_to_sign():
    rng = np.random.default_rng(0)
    # Gram path (D > P), covariance path, and every component (k = P - 1, as at 1000 images)
    for shape, k in (((50, 200), 10), ((80, 30), 10), ((40, 200), 39)):
        x = rng.standard_normal(shape) @ np.diag(np.linspace(3, 0.1, shape[1]))
        ours = pca_scores(x, n_components=1000 if k == 39 else k)
        assert ours.shape == (shape[0], k)
        reference = PCA(k).fit_transform(x)
        signs = np.sign((ours * reference).sum(0))
        np.testing.assert_allclose(ours * signs, reference, rtol=1e-3, atol=1e-3)


def test_gram_summed_over_column_blocks_equals_the_centred_product():
    from ssltrace.analysis.predictivity import _gram

    x = np.random.default_rng(3).random((40, 250)).astype(np.float32) + 5.0  # far from 0
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    for block in (40 * 7, 40 * 250, 10**9):  # 36 blocks (the last partial), one, one
        gram, _ = _gram(x, "cpu", block=block)
        np.testing.assert_allclose(gram, centred @ centred.T, rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_pca_scores_on_the_gpu_equal_the_cpu_up_to_sign():
    rng = np.random.default_rng(2)
    for shape in ((60, 300), (90, 40)):
        x = rng.standard_normal(shape) @ np.diag(np.linspace(3, 0.1, shape[1]))
        cpu, gpu = pca_scores(x, 10), pca_scores(x, 10, device="cuda")
        signs = np.sign((cpu * gpu).sum(0))
        np.testing.assert_allclose(gpu * signs, cpu, rtol=1e-3, atol=1e-3)


def test_pls_cross_validation_equals_scikit_learn_loop():
    a, responses, _, groups, _ = planted(n_images=150, n_features=30, n_neuroids=4)
    y = responses.mean(0).astype(np.float32)
    plan = cv_plan(groups, outer_folds=3)
    r, hyper = cross_validated_r(PLSReadout(PredictivitySettings()), a, y, plan)
    expected = []
    for train, test in plan.outer:
        model = PLSRegression(n_components=25, scale=False).fit(a[train], y[train])
        expected.append(
            [scipy.stats.pearsonr(model.predict(a[test])[:, n], y[test, n])[0] for n in range(4)]
        )
    np.testing.assert_allclose(r, np.mean(expected, axis=0), rtol=1e-5)
    assert np.isnan(hyper).all()


def test_split_chooses_hyperparameters_on_fit_and_scores_report_only():
    groups = np.arange(60) % 6
    split = np.where(np.arange(60) < 20, "fit", "report")
    plan = cv_plan(groups, split, outer_folds=4)
    assert set(plan.select) == set(range(20))
    for train, test in plan.outer:
        assert train.min() >= 20 and test.min() >= 20
    a, responses, _, _, _ = planted(n_images=60, n_features=5, n_neuroids=3)
    scores = layer_predictivity(
        a,
        responses.mean(0),
        groups,
        ["IT"] * 3,
        "ridge_pca",
        split=split,
        settings=PredictivitySettings(outer_folds=4),
    )
    assert np.isfinite(scores.raw).all() and np.isnan(scores.ceiled).all()


def test_factorised_readout_recovers_a_planted_spatial_mask():
    rng = np.random.default_rng(0)
    n, c, h, w, neuroids = 240, 6, 6, 6, 3
    maps = rng.standard_normal((n, c, h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = [(1.5, 1.5), (4.0, 2.0), (3.0, 4.5)]
    spatial = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0) for cy, cx in centres])
    channel = rng.standard_normal((neuroids, c))
    y = np.einsum("pkij,nij,nk->pn", maps, spatial, channel)
    y += 0.3 * y.std(0) * rng.standard_normal(y.shape)
    params = fit_factorised(maps, y, 1e-3, steps=250, device="cpu")
    for i in range(neuroids):
        assert abs(np.corrcoef(params["spatial"][i].ravel(), spatial[i].ravel())[0, 1]) > 0.95
    settings = PredictivitySettings(
        device="cpu", outer_folds=2, factorised_steps=120, weight_decays=(1e-3, 1.0)
    )
    split = np.where(np.arange(n) < 100, "fit", "report")  # w chosen once, on "fit"
    scores = layer_predictivity(
        maps, y, np.arange(n) % 5, ["V1"] * 3, "factorised_map", split=split, settings=settings
    )
    assert (scores.raw > 0.85).all() and set(scores.hyper) <= {1e-3, 1.0}
    with pytest.raises(ValueError, match="maps"):
        layer_predictivity(maps.reshape(n, -1), y, np.arange(n) % 5, ["V1"] * 3, "factorised_map")


# ----------------------------------------------------------------------------- summaries
def test_region_summaries_medians_and_bootstrap_se_by_hand():
    rng = np.random.default_rng(1)
    raw, ceiling = rng.uniform(0, 0.8, 30), rng.uniform(0.5, 1, 30)
    region = np.repeat(["V4", "IT"], [10, 20])
    scores = NeuroidScores("ridge_pca", raw, ceiling, raw / np.sqrt(ceiling), region)
    v4, it = region_summaries(scores, n_boot=200, seed=5)
    assert (v4.region, v4.n_neuroids, it.n_neuroids) == ("V4", 10, 20)
    assert v4.raw_median == np.median(raw[:10]) and it.ceiling_median == np.median(ceiling[10:])
    draws = np.random.default_rng(5).integers(10, size=(200, 10))
    assert v4.se == pytest.approx(np.median(scores.ceiled[:10][draws], axis=1).std(ddof=1))
    rows = summary_rows("layer3", "ridge_pca", [v4, it])
    assert ("layer3", "IT", "ridge_pca_ceiled", it.ceiled_median) in rows and len(rows) == 12


def test_ttest_matrix_equals_scipy():
    rng = np.random.default_rng(2)
    samples = {"simclr": rng.normal(0.5, 0.1, 40), "byol": rng.normal(0.55, 0.1, 40)}
    samples["supervised"] = samples["simclr"] + rng.normal(0.02, 0.05, 40)
    names, t, p = ttest_matrix(samples, paired=True)
    assert names == list(samples) and np.isnan(np.diag(p)).all()
    expected = scipy.stats.ttest_rel(samples["simclr"], samples["supervised"])
    assert p[0, 2] == pytest.approx(expected.pvalue) and t[0, 2] == pytest.approx(
        expected.statistic
    )
    np.testing.assert_allclose(p, p.T)
    _, _, p_ind = ttest_matrix(samples, paired=False)
    assert p_ind[0, 1] == pytest.approx(
        scipy.stats.ttest_ind(samples["simclr"], samples["byol"]).pvalue
    )


def test_settings_from_a_config_section():
    settings = PredictivitySettings.from_mapping({"alphas": [1.0, 10.0], "outer_folds": 10})
    assert settings.alphas == (1.0, 10.0) and settings.outer_folds == 10
    with pytest.raises(ValueError, match="unknown predictivity settings.*n_comp"):
        PredictivitySettings.from_mapping({"n_comp": 5})
