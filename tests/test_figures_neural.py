"""Seed 003 figures (ssltrace.figures.neural) drawn from synthetic predictivity and behaviour
tables and per-neuroid score files in the documented formats; the numbers drawn are checked
against pandas / scipy computed here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from matplotlib.patches import Rectangle

from ssltrace import io, tables
from ssltrace.analysis.ttests import behaviour_ttests, neural_ttests
from ssltrace.figures import FIGURES, style
from ssltrace.figures.neural import best_layer_per_seed, best_layers
from ssltrace.figures.table import figure_table

LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4", "pool", "head_fc1"]
METHODS = ["simclr", "supervised", "untrained"]
REGIONS = ["simulated:V1-like", "simulated:IT-like"]
SEEDS = (0, 1, 2)
EPOCHS = [0, 1, 2]
N_NEUROIDS = 10
SETTINGS = {
    "formats": ["png", "pdf"],
    "dpi": 50,
    "layer_order": LAYERS,
    "readouts": ["ridge_pca"],
    "ceiling": True,
    "behaviour_layers": None,
}
NEURAL_FIGURES = {  # the seed 003 figures of neural and behavioural data (figures/neural.py)
    row.draw
    for row in figure_table()
    if row.stem.startswith("seed003/")
    and {spec.analysis for spec in row.inputs.values()} <= {"predictivity", "behaviour"}
}


def peak(region: str) -> int:
    """The planted best layer: V1-like early, IT-like late."""
    return 1 if "V1" in region else 4


def write_neural_study(root) -> dict:
    rng = np.random.default_rng(0)
    rows, behaviour, inputs = [], [], {"scores": {}}
    for method in METHODS:
        gain = {"simclr": 0.7, "supervised": 0.8, "untrained": 0.4}[method]
        for seed in SEEDS:
            epochs = [0] if method == "untrained" else EPOCHS
            scores = np.zeros((len(epochs), 2, 1, len(LAYERS), 2 * N_NEUROIDS))
            for e, epoch in enumerate(epochs):
                for r, region in enumerate(REGIONS):
                    for li, layer in enumerate(LAYERS):
                        level = gain * (0.5 + 0.5 * epoch / 2) - 0.1 * abs(li - peak(region))
                        neuroids = level + 0.05 * rng.standard_normal(N_NEUROIDS)
                        scores[e, 1, 0, li, r * N_NEUROIDS : (r + 1) * N_NEUROIDS] = neuroids
                        scores[e, 0, 0, li, r * N_NEUROIDS : (r + 1) * N_NEUROIDS] = neuroids * 0.8
                        for metric, value in (
                            ("ridge_pca_ceiled", float(np.median(neuroids))),
                            ("ridge_pca_r", float(np.median(neuroids * 0.8))),
                            ("ridge_pca_se", 0.02),
                            ("ridge_pca_r_se", 0.015),
                        ):
                            rows.append((method, seed, epoch, layer, region, metric, value))
                consistency = gain - 0.3 + 0.05 * rng.standard_normal()
                for name in ("human", "user"):
                    behaviour.append(
                        (method, seed, epoch, "pool", name, "behaviour_consistency", consistency)
                    )
            path = root / "metrics" / f"{method}_seed{seed}_scores.npz"
            io.save_npz(
                path,
                {
                    "scores": scores,
                    "epochs": np.array(epochs),
                    "readouts": np.array(["ridge_pca"]),
                    "kinds": np.array(["raw", "ceiled"]),
                    "layers": np.array(LAYERS),
                    "region": np.repeat(REGIONS, N_NEUROIDS),
                    "neuroid": np.array([f"n{i}" for i in range(2 * N_NEUROIDS)]),
                    "ceiling": np.full(2 * N_NEUROIDS, 0.7),
                },
            )
            inputs["scores"][f"scores:{method}:{seed}"] = path
    for name, found in (("predictivity", rows), ("behaviour", behaviour)):
        frame = tables.frame(
            [dict(zip(tables.COLUMNS, row, strict=True)) for row in found]
        ).sort_values(tables.COLUMNS[:-1], kind="stable")
        path = root / "tables" / f"{name}.tsv"
        io.save_table(path, frame)
        inputs[name] = {"table": path, "ttests": root / "tables" / f"{name}_ttests.npz"}
    # the study matrix files of the t-tests, as the workflow's rules write them
    runs = {(k.split(":")[1], int(k.split(":")[2])): v for k, v in inputs["scores"].items()}
    io.save_npz(inputs["predictivity"]["ttests"], neural_ttests(runs))
    table = tables.read(inputs["behaviour"]["table"])
    io.save_npz(inputs["behaviour"]["ttests"], behaviour_ttests(table))
    return inputs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_neural_study(tmp_path_factory.mktemp("neural_study"))


def inputs_of(study, name: str) -> dict:
    row = next(r for r in figure_table() if r.draw == name)
    out = {}
    for role, spec in row.inputs.items():
        if spec.per_run:
            out.update(study["scores"])
        else:
            kind = "ttests" if spec.pattern.endswith("_ttests.npz") else "table"
            out[role] = study[spec.analysis][kind]
    return out


@pytest.fixture
def captured(monkeypatch):
    figures = []
    monkeypatch.setattr(style, "save", lambda fig, *a, **k: figures.append(fig) or [])
    yield figures
    import matplotlib.pyplot as plt

    for fig in figures:
        plt.close(fig)


def draw(name, study, tmp_path, **settings):
    return FIGURES.get(name)(inputs_of(study, name), tmp_path / name, {**SETTINGS, **settings})


@pytest.mark.parametrize("name", sorted(NEURAL_FIGURES))
def test_neural_figure_writes_png_and_pdf(name, study, tmp_path):
    png, pdf = (p.read_bytes() for p in draw(name, study, tmp_path))
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    assert pdf.startswith(b"%PDF") and len(pdf) > 2000


def test_every_seed003_row_names_the_paper_figure_and_simulated_data():
    assert NEURAL_FIGURES == {
        "neural_best_layer",
        "neural_across_layers",
        "neural_best_layer_index",
        "neural_over_epochs",
        "behaviour_consistency",
        "neural_ttests",
        "behaviour_ttests",
    }
    for row in figure_table():
        caption = " ".join(row.caption.split())
        if row.draw in NEURAL_FIGURES:
            assert "seed paper 003" in caption and row.paper.startswith("seed paper 003")
            if any(spec.analysis == "predictivity" for spec in row.inputs.values()):
                assert "SIMULATED" in caption  # the demo's data are labelled where they appear


def final_table(study) -> pd.DataFrame:
    table = tables.read(study["predictivity"]["table"])
    last = table.groupby(["method", "seed"])["epoch"].transform("max")
    return table[table["epoch"] == last]


def test_best_layer_is_the_planted_one_per_region(study):
    best = best_layers(final_table(study), "ridge_pca_ceiled", LAYERS)
    for region in REGIONS:
        assert set(best[best.probe == region].layer) == {LAYERS[peak(region)]}
    per_seed = best_layer_per_seed(final_table(study), "ridge_pca_ceiled", LAYERS)
    assert set(per_seed[per_seed.probe == "simulated:V1-like"].position) == {1}


def test_fig2b_bars_are_seed_means_at_the_best_layer(study, tmp_path, captured):
    draw("neural_best_layer", study, tmp_path)
    fig = captured[0]
    table = final_table(study)
    for ax, region in zip(fig.axes, sorted(REGIONS), strict=True):
        assert ax.get_title() == region
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        layer = LAYERS[peak(region)]
        rows = table[(table.probe == region) & (table.layer == layer)]
        rows = rows[rows.metric == "ridge_pca_ceiled"]
        expected = [rows[rows.method == m].value.mean() for m in METHODS]
        np.testing.assert_allclose([b.get_height() for b in bars], expected, rtol=1e-12)


def test_without_ceiling_the_figures_show_raw_r(study, tmp_path, captured):
    draw("neural_best_layer", study, tmp_path, ceiling=False)
    bars = [p for p in captured[0].axes[0].patches if isinstance(p, Rectangle)]
    table = final_table(study)
    region = sorted(REGIONS)[0]
    rows = table[(table.probe == region) & (table.layer == LAYERS[peak(region)])]
    expected = rows[(rows.metric == "ridge_pca_r") & (rows.method == METHODS[0])].value.mean()
    assert bars[0].get_height() == pytest.approx(expected)
    assert "Pearson r" in captured[0].axes[0].get_ylabel()


def test_ed1_pvalues_equal_scipy_paired_ttests_at_the_best_layers(study, tmp_path, captured):
    draw("neural_ttests", study, tmp_path)
    fig = captured[0]
    region = sorted(REGIONS)[0]  # IT-like first
    member = np.repeat(REGIONS, N_NEUROIDS) == region
    vectors = {}
    for method in METHODS:
        runs = [io.load_npz(study["scores"][f"scores:{method}:{s}"]) for s in SEEDS]
        mean = np.mean([r["scores"][-1, 1, 0][:, member] for r in runs], axis=0)
        vectors[method] = mean[np.argmax(np.median(mean, axis=1))]
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in fig.axes[0].texts
    }
    p = scipy.stats.ttest_rel(vectors["simclr"], vectors["supervised"]).pvalue
    assert texts[(0, 1)].split("\n")[1] == f"{p:.2g}"
    assert texts[(0, 1)].startswith("−")  # supervised (gain 0.8) exceeds simclr (0.7)


def test_ed8_pvalues_equal_scipy_unpaired_ttests(study, tmp_path, captured):
    draw("behaviour_ttests", study, tmp_path)
    table = tables.read(study["behaviour"]["table"])
    last = table.groupby(["method", "seed"])["epoch"].transform("max")
    rows = table[(table.epoch == last) & (table.probe == "human")]
    a, b = (rows[rows.method == m].value for m in ("simclr", "untrained"))
    p = scipy.stats.ttest_ind(a, b).pvalue
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in captured[0].axes[0].texts
    }
    assert texts[(0, 2)] == f"+\n{p:.2g}"


def test_fig4d_bars_are_seed_means_per_behaviour_set(study, tmp_path, captured):
    draw("behaviour_consistency", study, tmp_path)
    table = tables.read(study["behaviour"]["table"])
    last = table.groupby(["method", "seed"])["epoch"].transform("max")
    rows = table[(table.epoch == last) & (table.probe == "user")]
    ax = captured[0].axes[1]
    assert ax.get_title() == "user"
    bars = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
    np.testing.assert_allclose(bars, [rows[rows.method == m].value.mean() for m in METHODS])


def test_ed11_traces_the_best_layer_over_epochs(study, tmp_path, captured):
    draw("neural_over_epochs", study, tmp_path)
    table = tables.read(study["predictivity"]["table"])
    rows = table[(table.metric == "ridge_pca_ceiled") & (table.probe == "simulated:V1-like")]
    best = rows.groupby(["method", "seed", "epoch"]).value.max().groupby(["method", "epoch"]).mean()
    ax = captured[0].axes[1]
    line = next(l for l in ax.lines if l.get_label() == "simclr")
    np.testing.assert_allclose(line.get_ydata(), best["simclr"].to_numpy())


def test_missing_metric_names_the_table(study, tmp_path):
    with pytest.raises(ValueError, match="predictivity.tsv.*pls_pca_ceiled"):
        draw("neural_across_layers", study, tmp_path, readouts=["pls_pca"])
