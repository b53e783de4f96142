"""Figures from synthetic tables and matrix files written in the documented formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from ssltrace import io, tables
from ssltrace.figures import FIGURES, matrixplot, readers, style
from ssltrace.figures.table import figure_table
from tests import seed003_study

LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4", "pool", "head_fc1", "head_fc2"]
METHODS = ["simclr", "byol", "supervised", "untrained"]
EPOCHS = [0, 1, 2, 3, 4]
COARSE = ["fish", "flowers", "insects", "trees"]
FINE_PER_COARSE = 3
HUMAN_CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
GROUPS = ["animals", "plants", "vehicles"]
N_IMAGES = 12
SETTINGS = {"formats": ["png", "pdf"], "dpi": 50, "layer_order": LAYERS}


def run_epochs(method: str) -> list[int]:
    return [0] if method == "untrained" else EPOCHS


# ---------------------------------------------------------------- synthetic study -------------
def _row(method, seed, epoch, layer, probe, metric, value):
    return dict(
        method=method, seed=seed, epoch=epoch, layer=layer, probe=probe, metric=metric, value=value
    )


def _errors(rng, epoch, depth, coarse):
    """Error matrix: lower between coarse groups as training and depth progress."""
    c = len(coarse)
    same = coarse[:, None] == coarse[None, :]
    sharp = 0.05 * epoch + 0.04 * depth
    base = np.where(same, 0.35, 0.35 - sharp) + rng.uniform(0, 0.05, (c, c))
    base = np.clip(base, 0.01, 0.99)
    np.fill_diagonal(base, 0.0)
    return base


def write_study(root, seeds=(0, 1)):
    """Tables, per-run matrices and training logs of a tiny study; returns the figure inputs."""
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    rng = np.random.default_rng(0)
    n_classes = len(COARSE) * FINE_PER_COARSE
    # Interleave coarse classes so ordering by coarse class visibly changes the matrices.
    class_coarse = np.tile(np.arange(len(COARSE)), FINE_PER_COARSE)
    class_names = np.array([f"fine{i:02d}" for i in range(n_classes)])
    group_of_image = np.repeat(np.arange(len(GROUPS)), N_IMAGES // len(GROUPS))
    human = rng.dirichlet(np.ones(len(HUMAN_CLASSES)), size=len(HUMAN_CLASSES))
    rows = {name: [] for name in ("fewshot", "clustering", "human", "trajectory", "geometry")}
    inputs = {name: {} for name in rows}
    inputs["logs"] = {}
    for method in METHODS:
        for seed in seeds:
            epochs = run_epochs(method)
            shape = (len(epochs), len(LAYERS))
            errors = np.zeros((*shape, n_classes, n_classes))
            linkage = np.zeros((*shape, n_classes - 1, 4))
            clusters = np.zeros((*shape, n_classes), dtype=np.int64)
            corr = np.zeros((*shape, len(COARSE), len(COARSE)), dtype=np.int64)
            confusion = np.zeros((*shape, len(HUMAN_CLASSES), len(HUMAN_CLASSES)))
            rdms = np.zeros((*shape, N_IMAGES, N_IMAGES), dtype=np.float32)
            for e, epoch in enumerate(epochs):
                for li, layer in enumerate(LAYERS):
                    err = _errors(rng, epoch, li, class_coarse)
                    errors[e, li] = err
                    off = err[~np.eye(n_classes, dtype=bool)].mean()
                    rows["fewshot"].append(
                        _row(method, seed, epoch, layer, "novel", "fewshot_error", off)
                    )
                    dissim = 1 - (err + err.T) / 2
                    np.fill_diagonal(dissim, 0)
                    z = hierarchy.linkage(squareform(dissim, checks=False), "average")
                    linkage[e, li] = z
                    labels = hierarchy.fcluster(z, len(COARSE), "maxclust") - 1
                    clusters[e, li] = labels
                    for k, c in zip(labels, class_coarse, strict=True):
                        corr[e, li, min(k, len(COARSE) - 1), c] += 1
                    mi = 0.2 * epoch + 0.1 * li + rng.uniform(0, 0.1)
                    for metric, value in (("mi_bits", mi), ("nmi", mi / 2), ("mi_pvalue", 0.02)):
                        rows["clustering"].append(
                            _row(method, seed, epoch, layer, "novel", metric, value)
                        )
                    model = 0.5 * human + 0.5 * rng.dirichlet(np.ones(len(HUMAN_CLASSES)), 5)
                    confusion[e, li] = model / model.sum(1, keepdims=True)
                    rho = 0.1 * li - 0.05 * epoch + rng.normal(0, 0.05)
                    for metric, value in (
                        ("human_spearman_offdiag", rho),
                        ("human_spearman_full", rho + 0.3),
                        ("human_spearman_offdiag_pvalue", 0.1),
                        ("human_spearman_full_pvalue", 0.2),
                        ("fewshot_accuracy", 0.5),
                    ):
                        rows["human"].append(
                            _row(method, seed, epoch, layer, "human", metric, value)
                        )
                    x = rng.normal(size=(N_IMAGES, 8)) + group_of_image[:, None] * 0.3 * epoch
                    rdm = np.clip(1 - np.corrcoef(x), 0, 2)
                    np.fill_diagonal(rdm, 0)
                    rdms[e, li] = rdm
                    if e > 0:
                        stab = 0.5 + 0.1 * epoch + rng.uniform(0, 0.05)
                        for how in ("pearson", "spearman"):
                            rows["trajectory"].append(
                                _row(
                                    method, seed, epoch, layer, "rdm", f"rdm_stability_{how}", stab
                                )
                            )
                    for g, group in enumerate(GROUPS):
                        members = group_of_image == g
                        within = rdm[np.ix_(members, members)][np.triu_indices(members.sum(), 1)]
                        between = rdm[np.ix_(members, ~members)]
                        for kind, value in (("within", within.mean()), ("between", between.mean())):
                            rows["trajectory"].append(
                                _row(
                                    method,
                                    seed,
                                    epoch,
                                    layer,
                                    "rdm",
                                    f"{kind}_dissimilarity/{group}",
                                    value,
                                )
                            )
                    for level, chance in (("fine", 0.08), ("coarse", 0.25), ("sample", 0.1)):
                        acc = min(1.0, chance + 0.1 * epoch + 0.05 * li + rng.uniform(0, 0.03))
                        for metric, value in (
                            ("ncc_train", acc + 0.05),
                            ("ncc_test", acc),
                            ("linear_svm", min(1.0, acc + 0.1)),
                            ("linear_logistic", min(1.0, acc + 0.08)),
                            ("ncc_linear_ratio", acc / min(1.0, acc + 0.1)),
                            ("cdnv", 2.0 / (1 + epoch + li) + rng.uniform(0, 0.1)),
                            ("within_var", 1.0),
                            ("between_dist", 1.0 + epoch),
                        ):
                            rows["geometry"].append(
                                _row(method, seed, epoch, layer, level, metric, value)
                            )
            run = f"{method}:{seed}"
            common = {"epochs": np.array(epochs), "layers": np.array(LAYERS)}
            classes = {
                "class_names": class_names,
                "class_coarse": class_coarse,
                "coarse_names": np.array(COARSE),
            }
            path = root / "metrics" / "fewshot" / method / f"seed{seed}_errors.npz"
            io.save_npz(path, {"errors": errors, **common, **classes})
            inputs["fewshot"][f"errors:{run}"] = path
            path = root / "metrics" / "clustering" / method / f"seed{seed}_clusters.npz"
            io.save_npz(
                path,
                {
                    "clusters": clusters,
                    "correspondence": corr,
                    "linkage": linkage,
                    **common,
                    **classes,
                },
            )
            inputs["clustering"][f"clusters:{run}"] = path
            path = root / "metrics" / "human" / method / f"seed{seed}_confusion.npz"
            io.save_npz(
                path,
                {
                    "confusion": confusion,
                    "human": human,
                    **common,
                    "class_names": np.array(HUMAN_CLASSES),
                },
            )
            inputs["human"][f"confusion:{run}"] = path
            path = root / "metrics" / "trajectory" / method / f"seed{seed}_rdms.npz"
            io.save_npz(
                path,
                {
                    "rdms": rdms,
                    **common,
                    "group_of_image": group_of_image,
                    "groups": np.array(GROUPS),
                },
            )
            inputs["trajectory"][f"rdms:{run}"] = path
            path = root / "runs" / method / f"seed{seed}" / "train_log.tsv"
            trained = [e for e in epochs if e > 0]
            log = pd.DataFrame(
                {
                    "epoch": trained,
                    "loss": [5.0 / e + 0.1 * seed for e in trained],
                    "invariance": [np.nan if method == "supervised" else 1.0 / e for e in trained],
                    "regularisation": [
                        np.nan if method == "supervised" else 2.0 / e for e in trained
                    ],
                    "lr": [0.1] * len(trained),
                    "seconds": [1.0] * len(trained),
                    "images_per_s": [100.0] * len(trained),
                }
            )
            io.save_table(path, log)
            inputs["logs"][f"log:{run}"] = path
    rows["compression"] = [
        _row(m, s, e, layer, "known", "mi", 3.0 - 0.2 * e + 0.1 * li + 0.05 * s)
        for m in METHODS
        for s in seeds
        for e in run_epochs(m)
        for li, layer in enumerate(LAYERS)
    ]
    inputs["compression"] = {}
    inputs["umap"] = {}
    for m in METHODS:
        for s in seeds:
            epochs = [run_epochs(m)[0], run_epochs(m)[-1]]
            n = 3 * 20
            path = root / "metrics" / "umap" / m / f"seed{s}_embeddings.npz"
            io.save_npz(
                path,
                {
                    "coords": rng.normal(size=(len(epochs) * 3 * n, 2)).astype(np.float32),
                    "level": np.tile(np.repeat(["sample", "fine", "coarse"], n), len(epochs)),
                    "group": np.tile(np.arange(n) % 3, 3 * len(epochs)),
                    "group_name": np.tile(
                        np.array(["a", "b", "c"])[np.arange(n) % 3], 3 * len(epochs)
                    ),
                    "point_epoch": np.repeat(epochs, 3 * n),
                    "layer": np.array("pool"),
                },
            )
            inputs["umap"][f"embeddings:{m}:{s}"] = path
    inputs["random_targets"] = {}
    rand = np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 0.0]])
    for m in METHODS:
        for s in seeds:
            epochs = run_epochs(m)
            shape = (len(epochs), len(LAYERS), 2)
            acc = 0.9 - 0.6 * rand[None, None] + 0.02 * np.arange(len(epochs))[:, None, None, None]
            path = root / "metrics" / "random_targets" / m / f"seed{s}_scores.npz"
            io.save_npz(
                path,
                {
                    "accuracy": np.broadcast_to(acc, (*shape, 3))
                    + rng.uniform(0, 0.02, (*shape, 3)),
                    "ratios": 1.0 + rng.uniform(0, 1, (*shape, 4)),
                    "epochs": np.array(epochs),
                    "layers": np.array(LAYERS),
                    "networks": np.array(["resnet18", "vit"]),
                    "measures": np.array(["ncc_test", "cdnv", "within_var", "between_dist"]),
                    "randomness": rand,
                    "target_epochs": np.array([[0, 1, 2], [0, 1, 2]]),
                },
            )
            inputs["random_targets"][f"scores:{m}:{s}"] = path
    for name, found in rows.items():
        path = root / "tables" / f"{name}.tsv"
        # Sorted like `tables.concat`: layers end up alphabetical, not input -> output.
        io.save_table(path, tables.frame(found).sort_values(tables.COLUMNS[:-1], kind="stable"))
        inputs[name]["table"] = path
    inputs.update(seed003_study.write(root, METHODS, seeds, run_epochs, LAYERS))
    inputs.update(seed003_study.write_units(root, METHODS, seeds, run_epochs))
    return inputs


# Figure name -> the inputs it reads: (study table, per-run files).
# What each figure reads, from the figure table: (analysis or "logs", "table" or "runs").
# Seed 003's figures of neural and behavioural data are tested in tests/test_figures_neural.py,
# the label sweep (Fig. 4e-f, which needs labelled-subset runs) in tests/test_semisup.py.
SEED003 = {
    row.draw
    for row in figure_table()
    if {spec.analysis for spec in row.inputs.values()} <= {"predictivity", "behaviour"}
    or row.draw == "label_sweep"
}
FIGURE_INPUTS = {
    row.draw: [
        (role, spec.analysis or "logs", "runs" if spec.per_run else "table")
        for role, spec in row.inputs.items()
    ]
    for row in figure_table()
    if row.draw not in SEED003
}
LINE_FIGURES = [
    "fewshot_error_vs_layer",
    "mi_vs_layer",
    "spearman_vs_layer",
    "rdm_stability",
    "category_dissimilarity",
    "geometry_accuracy",
    "geometry_layers",
    "cdnv_vs_epoch",
    "compression_vs_epoch",
    "training_curves",
    "loss_and_accuracy",
]


def figure_inputs(study: dict, name: str) -> dict:
    out = {}
    for role, analysis, kind in FIGURE_INPUTS[name]:
        found = study[analysis]
        if kind == "table":  # a study table goes in under its role (most figures: `table`)
            out[role] = found["table"]
        else:
            out.update({k: v for k, v in found.items() if k != "table"})
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def single_seed_study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("study1"), seeds=(3,))


@pytest.fixture
def captured(monkeypatch):
    """Figures as drawn, instead of saving them (artists are inspected, rendering is skipped)."""
    figures = []

    def keep(fig, stem, formats, dpi):
        figures.append(fig)
        return []

    monkeypatch.setattr(style, "save", keep)
    yield figures
    import matplotlib.pyplot as plt

    for fig in figures:
        plt.close(fig)


def draw(name, inputs, tmp_path, **settings):
    return FIGURES.get(name)(inputs, tmp_path / name, {**SETTINGS, **settings})


# ---------------------------------------------------------------- tests ------------------------
def test_every_registered_figure_is_covered():
    assert set(FIGURES.names()) == set(FIGURE_INPUTS) | SEED003


@pytest.mark.parametrize("name", sorted(FIGURE_INPUTS))
def test_figure_writes_nonempty_png_and_pdf(name, study, tmp_path):
    written = draw(name, figure_inputs(study, name), tmp_path)
    assert [p.suffix for p in written] == [".png", ".pdf"]
    png, pdf = (p.read_bytes() for p in written)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    assert pdf.startswith(b"%PDF") and len(pdf) > 2000
    assert not list(tmp_path.glob(".*.tmp*")), "atomic write left a temporary file"


def _bands(fig) -> list:
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


@pytest.mark.parametrize("name", LINE_FIGURES)
def test_several_seeds_draw_sd_bands_and_one_seed_none(
    name, study, single_seed_study, tmp_path, captured
):
    draw(name, figure_inputs(study, name), tmp_path)
    draw(name, figure_inputs(single_seed_study, name), tmp_path)
    several, single = captured
    assert _bands(several), f"{name}: no SD band with two seeds"
    assert not _bands(single), f"{name}: SD band drawn for a single seed"


def _line_colour(fig, label):
    colours = {
        tuple(line.get_color())
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_label() == label
    }
    assert len(colours) == 1, f"{label}: colours {colours}"
    return colours.pop()


def test_a_method_has_the_same_colour_in_every_figure(study, tmp_path, captured):
    for name in ("fewshot_error_vs_layer", "rdm_stability", "geometry_accuracy"):
        draw(name, figure_inputs(study, name), tmp_path)
    for method in ("simclr", "byol", "supervised"):
        colours = {_line_colour(fig, method) for fig in captured}
        assert colours == {tuple(style.method_palette([method])[method])}
    # The training-curve panel of simclr is drawn in simclr's colour too.
    draw("training_curves", figure_inputs(study, "training_curves"), tmp_path)
    simclr_ax = next(ax for ax in captured[-1].axes if ax.get_title().startswith("simclr"))
    assert {tuple(line.get_color()) for line in simclr_ax.get_lines()} == {
        tuple(style.method_palette(["simclr"])["simclr"])
    }


def test_method_colours_do_not_depend_on_the_other_methods():
    alone = style.method_palette(["my_method"])["my_method"]
    assert style.method_palette(["simclr", "zeta", "my_method"])["my_method"] == alone
    assert style.method_palette(["byol"])["byol"] == style.method_palette(METHODS)["byol"]
    palette = style.method_palette(style.METHOD_ORDER)
    assert len(set(palette.values())) == len(style.METHOD_ORDER)


def test_metric_vs_layer_plots_final_epoch_seed_means_in_layer_order(study, tmp_path, captured):
    draw("fewshot_error_vs_layer", figure_inputs(study, "fewshot_error_vs_layer"), tmp_path)
    ax = captured[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    table = pd.read_csv(study["fewshot"]["table"], sep="\t")
    for method in ("simclr", "untrained"):
        rows = table[(table.method == method) & (table.epoch == max(run_epochs(method)))]
        expected = rows.groupby("layer")["value"].mean().reindex(LAYERS).to_numpy()
        line = next(line for line in ax.get_lines() if line.get_label() == method)
        np.testing.assert_allclose(line.get_ydata(), expected)
        sd = rows.groupby("layer")["value"].std().reindex(LAYERS).to_numpy()
        band = next(
            c
            for c in ax.collections
            if isinstance(c, PolyCollection)
            and np.allclose(c.get_facecolor()[0][:3], style.method_palette([method])[method])
        )
        ys = band.get_paths()[0].vertices[:, 1]
        np.testing.assert_allclose(
            [ys.min(), ys.max()], [(expected - sd).min(), (expected + sd).max()]
        )


def test_error_matrices_show_seed_mean_grouped_by_coarse_class(study, tmp_path, captured):
    inputs = figure_inputs(study, "fewshot_error_matrices")
    draw("fewshot_error_matrices", inputs, tmp_path, methods=["byol"], matrix_layers=["layer2"])
    ax = captured[0].axes[0]
    shown = ax.get_images()[0].get_array()
    runs = [io.load_npz(inputs[f"errors:byol:{s}"]) for s in (0, 1)]
    mean = np.mean([r["errors"][-1, LAYERS.index("layer2")] for r in runs], axis=0)
    order = np.argsort(runs[0]["class_coarse"], kind="stable")
    expected = mean[np.ix_(order, order)]
    np.fill_diagonal(expected, np.nan)
    np.testing.assert_allclose(np.ma.filled(shown, np.nan), expected)
    # Coarse groups are contiguous and named at their centres.
    assert [t.get_text() for t in ax.get_yticklabels()] == COARSE
    assert ax.get_title() == "byol · layer2"


def test_dendrogram_leaves_and_pure_links_take_the_coarse_colour(study, tmp_path, captured):
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_hex

    inputs = figure_inputs(study, "dendrograms")
    draw("dendrograms", inputs, tmp_path, methods=["simclr"])
    ax = captured[0].axes[0]
    meta = io.load_npz(inputs["clusters:simclr:0"])
    palette = [p.lower() for p in style.coarse_palette(len(COARSE))]
    names = list(meta["class_names"])
    leaves = [names.index(tick.get_text()) for tick in ax.get_yticklabels()]
    markers = next(c for c in ax.collections if isinstance(c, PathCollection))
    # One marker per leaf, bottom to top like the labels, in the leaf's coarse colour.
    assert [to_hex(c) for c in markers.get_facecolors()] == [
        palette[meta["class_coarse"][leaf]] for leaf in leaves
    ]
    link_colours = {
        to_hex(c)
        for coll in ax.collections
        if not isinstance(coll, PathCollection)
        for c in coll.get_colors()
    }
    assert link_colours & set(palette), "no link coloured by a coarse class"
    assert link_colours <= set(palette) | {to_hex("0.55")}, "links in other colours"


def test_best_layer_is_the_highest_seed_mean(study):
    from ssltrace.figures.clusters import best_layers

    best = best_layers(figure_inputs(study, "correspondence"), SETTINGS, "mi_bits")
    table = pd.read_csv(study["clustering"]["table"], sep="\t")
    rows = table[(table.metric == "mi_bits") & (table.method == "simclr") & (table.epoch == 4)]
    assert best.loc["simclr", "layer"] == rows.groupby("layer")["value"].mean().idxmax()


def test_missing_metric_names_the_file_and_metric(study, tmp_path):
    inputs = {"table": study["clustering"]["table"]}  # a table without fewshot_error
    with pytest.raises(ValueError, match=r"clustering\.tsv has no rows for metric 'fewshot_error'"):
        draw("fewshot_error_vs_layer", inputs, tmp_path)


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "fewshot.tsv"
    with pytest.raises(FileNotFoundError, match=f"'table': file {missing} does not exist"):
        draw("fewshot_error_vs_layer", {"table": missing}, tmp_path)


def test_missing_role_is_named(study, tmp_path):
    runs_only = {k: v for k, v in study["clustering"].items() if k != "table"}
    with pytest.raises(ValueError, match=r"missing figure input 'table' \(pass --input table="):
        draw("dendrograms", runs_only, tmp_path)
    with pytest.raises(ValueError, match="missing per-run figure inputs errors:METHOD:SEED"):
        draw("fewshot_error_matrices", {"table": study["fewshot"]["table"]}, tmp_path)


def test_matrix_file_without_the_array_is_named(study, tmp_path):
    inputs = {"errors:simclr:0": study["clustering"]["clusters:simclr:0"]}
    with pytest.raises(ValueError, match=r"seed0_clusters\.npz lacks array 'errors'"):
        draw("fewshot_error_matrices", inputs, tmp_path)


def test_bad_settings_name_the_key(study, tmp_path):
    with pytest.raises(ValueError, match="figures.deep_layer: unknown layer 'layer9'"):
        draw("rdm_stability", figure_inputs(study, "rdm_stability"), tmp_path, deep_layer="layer9")
    with pytest.raises(ValueError, match="figures.epochs: epoch 7 was not analysed"):
        draw("rdm_snapshots", figure_inputs(study, "rdm_snapshots"), tmp_path, epochs=[0, 7])
    with pytest.raises(ValueError, match="figures.methods: method 'moco_v2' has no inputs"):
        draw(
            "correspondence", figure_inputs(study, "correspondence"), tmp_path, methods=["moco_v2"]
        )


def test_seed_means_average_only_runs_that_have_the_epoch(study):
    runs = readers.run_inputs(study["trajectory"], "rdms")
    means, meta = matrixplot.seed_means(runs, "simclr", "rdms", ["groups"], [0, 4])
    expected = np.mean(
        [io.load_npz(p)["rdms"][4] for (m, _), p in runs.items() if m == "simclr"], axis=0
    )
    np.testing.assert_allclose(means[4][0], expected, rtol=1e-6)
    assert means[4][1] == 2 and meta["groups"].tolist() == GROUPS
    untrained, _ = matrixplot.seed_means(runs, "untrained", "rdms", ["groups"], [0, 4])
    assert set(untrained) == {0}


def test_run_inputs_are_in_legend_order_and_checked(study):
    runs = readers.run_inputs(study["fewshot"], "errors")
    assert list(runs)[:3] == [("simclr", 0), ("simclr", 1), ("byol", 0)]
    with pytest.raises(ValueError, match="must be named errors:METHOD:SEED"):
        readers.run_inputs({"errors:simclr": study["fewshot"]["table"]}, "errors")


def test_layer_choices_default_to_early_middle_and_backbone_output():
    assert readers.early_deep({}, LAYERS) == ("layer1", "pool")
    assert readers.matrix_layers({}, LAYERS) == ["layer1", "layer3", "pool"]
    assert readers.layer_order({"layer_order": LAYERS}, sorted(LAYERS)) == LAYERS
    assert readers.chosen_epochs({}, range(0, 11)) == [0, 3, 7, 10]


def test_human_panel_is_the_seed_mean_at_the_best_spearman_layer(study, tmp_path, captured):
    inputs = figure_inputs(study, "human_confusion")
    draw("human_confusion", inputs, tmp_path, methods=["byol"])
    human_ax, byol_ax = (ax for ax in captured[0].axes if ax.get_images())
    table = pd.read_csv(inputs["table"], sep="\t")
    rows = table[
        (table.metric == "human_spearman_offdiag") & (table.method == "byol") & (table.epoch == 4)
    ]
    best = rows.groupby("layer")["value"].mean().idxmax()
    runs = [io.load_npz(inputs[f"confusion:byol:{s}"]) for s in (0, 1)]
    expected = np.mean([r["confusion"][-1, LAYERS.index(best)] for r in runs], axis=0)
    np.fill_diagonal(expected, np.nan)
    shown = np.ma.filled(byol_ax.get_images()[0].get_array(), np.nan)
    np.testing.assert_allclose(shown, expected)
    human = runs[0]["human"].copy()
    np.fill_diagonal(human, np.nan)
    np.testing.assert_allclose(np.ma.filled(human_ax.get_images()[0].get_array(), np.nan), human)
    assert byol_ax.get_title().startswith(f"byol · {best}")


def test_seed004_fig2_divides_each_curve_by_its_value_at_initialisation():
    from ssltrace.figures.geometry import _normalised_at_init, _with_ratio

    rows = []
    for epoch, (ncc, svm) in enumerate([(0.2, 0.4), (0.3, 0.5), (0.6, 0.8)]):
        rows += [
            _row("simclr", 0, epoch, "pool", "fine", "ncc_test", ncc),
            _row("simclr", 0, epoch, "pool", "fine", "linear_svm", svm),
        ]
    out = _normalised_at_init(_with_ratio(pd.DataFrame(rows), "linear_svm"))
    ratio = out[out.metric == "ratio"].sort_values("epoch")["value"].to_numpy()
    np.testing.assert_allclose(ratio, [1.0, (0.3 / 0.5) / 0.5, (0.6 / 0.8) / 0.5])
    svm = out[out.metric == "linear_svm"].sort_values("epoch")["value"].to_numpy()
    np.testing.assert_allclose(svm, [1.0, 1.25, 2.0])


# ---------------------------------------------------------------- statistics (issue 18, item 15)


def _band_heights(fig) -> np.ndarray:
    """Band height (upper - lower) at every x of every band of `fig`."""
    heights = []
    for band in _bands(fig):
        for path in band.get_paths():
            xs, ys = path.vertices[:, 0], path.vertices[:, 1]
            heights += [np.ptp(ys[np.isclose(xs, x)]) for x in np.unique(xs)]
    return np.array(heights)


@pytest.mark.parametrize("name", ["rdm_stability", "fewshot_error_vs_layer"])
def test_ci95_option_widens_bands_by_students_t(name, study, tmp_path, captured):
    """With 2 seeds the 95 % CI half-width is t(0.975, 1) / sqrt(2) = 8.98 SDs."""
    from ssltrace.figures import draw as draw_figure

    inputs = figure_inputs(study, name)
    draw_figure(name, inputs, tmp_path / "sd", {**SETTINGS, "band": "sd"})
    draw_figure(name, inputs, tmp_path / "ci", {**SETTINGS, "band": "ci95"})
    sd, ci = (_band_heights(fig) for fig in captured)
    assert len(sd) == len(ci) and len(sd) > 0
    keep = sd > 1e-9
    np.testing.assert_allclose(ci[keep] / sd[keep], 12.7062047 / np.sqrt(2), rtol=1e-4)
    assert style.band_kind() == "sd"  # reset after drawing


def test_band_halfwidth_is_sd_or_the_t_interval():
    from scipy.stats import t

    sd, count = np.array([2.0, 2.0, 1.0]), np.array([5, 1, 10])
    np.testing.assert_allclose(style.band_halfwidth(sd, count), [2.0, 0.0, 1.0])
    style.use_band("ci95")
    try:
        # hand-worked: t(0.975, 4) = 2.7764451; 2.7764451 * 2 / sqrt(5) = 2.483328
        got = style.band_halfwidth(sd, count)
        assert got[0] == pytest.approx(2.483328, abs=1e-6) and got[1] == 0.0
        low, high = t.interval(0.95, df=9, loc=0.0, scale=1.0 / np.sqrt(10))
        assert got[2] == pytest.approx(high)
        assert style.seeds_note(5) == "mean, 95 % CI over 5 seeds"
    finally:
        style.use_band("sd")
    assert style.seeds_note(5) == "mean ± SD over 5 seeds" and style.seeds_note(1) == "1 seed"
    with pytest.raises(ValueError, match="figures.band"):
        style.use_band("se")


def test_mean_sd_lines_band_is_the_planted_spread():
    """Three seeds at each x with values m - 1, m, m + 1: SD 1, band m ± 1."""
    import matplotlib.pyplot as plt

    rows = [
        {"method": "simclr", "seed": s, "epoch": x, "value": 10.0 * x + d}
        for x in range(3)
        for s, d in enumerate((-1.0, 0.0, 1.0))
    ]
    fig, ax = plt.subplots()
    style.mean_sd_lines(ax, pd.DataFrame(rows), "epoch", {"simclr": "C0"})
    (band,) = _bands(fig)
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(-1.0) and ys.max() == pytest.approx(21.0)
    plt.close(fig)


def test_ed11_development_shows_neural_predictivity_beside_the_other_curves(
    study, tmp_path, captured
):
    # Seed 003 ED Fig. 11: circular variance, kNN, position, then one panel per region of the
    # predictivity table with the best layer's score per epoch (mean over seeds), and none
    # when the study has no predictivity input.
    draw("development", figure_inputs(study, "development"), tmp_path)
    axes = [ax for ax in captured[0].axes if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles[:3] == ["Orientation selectivity", "Object categorisation", "Object position"]
    assert titles[3:] == ["Neural: simulated:IT-like", "Neural: simulated:V1-like"]
    table = tables.read(study["predictivity"]["table"])
    rows = table[(table.metric == "factorised_map_ceiled") & (table.probe == "simulated:V1-like")]
    best = rows.groupby(["method", "seed", "epoch"]).value.max().groupby(["method", "epoch"]).mean()
    line = next(line for line in axes[4].lines if line.get_label() == "simclr")
    np.testing.assert_allclose(line.get_ydata(), best["simclr"].to_numpy())
    inputs = {k: v for k, v in figure_inputs(study, "development").items() if k != "predictivity"}
    draw("development", inputs, tmp_path)
    assert len([ax for ax in captured[1].axes if ax.get_title()]) == 3


def test_captions_state_the_seeds_the_band_and_the_stimuli():
    from ssltrace import study as study_module
    from tests.test_config import base

    cfg = study_module.checked(base())
    rows = {row.stem: row for row in figure_table()}
    row = rows["seed001/fig01_rdm_stability"]
    caption = study_module.figure_caption(row, cfg)
    assert "{rdm_stimuli}" not in caption and "CIFAR stand-in" in caption
    assert "1 seed per method" in caption  # the CI preset has one seed
    cfg["seeds"] = [0, 1, 2]
    cfg["figures"]["band"] = "ci95"
    caption = study_module.figure_caption(row, cfg)
    assert "3 seeds per method" in caption and "95 % confidence intervals" in caption
    assert "± 1 SD" not in caption
