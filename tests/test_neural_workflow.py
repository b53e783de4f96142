"""Neural predictivity and behavioural consistency in the workflow (issue 17): the neural probe
set, extraction of full maps, the `predictivity` and `behaviour` analyses against planted
answers and the array-level library, the CLI verbs and the dry-run checks of bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace import config as sslconfig
from ssltrace import io, study
from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.behaviour import Behaviour, behavioural_consistency, model_probabilities
from ssltrace.analysis.predictivity import (
    Predictivity,
    PredictivitySettings,
    dataset_ceiling,
    feature_map,
    region_summaries,
    score_layer,
)
from ssltrace.cli import main
from ssltrace.config import ConfigError
from ssltrace.data.neural import (
    NeuralData,
    _add_trial_noise,
    _to_dataset,
    neural_probe,
    probe_block_data,
    read_neural,
    simulate_neural,
    write_neural,
)
from ssltrace.extract import extract_many
from ssltrace.network import load_network
from tests.conftest import ROOT
from tests.test_extract import write_checkpoint
from tests.test_neural_data import brainio_files, tiny, write_dataset

SMALL = {"categories": 4, "objects_per_category": 3, "images_per_object": 6}


def quiet(_line: str) -> None:
    pass


def settings(section: str, **over) -> dict:
    return {**sslconfig.defaults()[section], **over}


# ----------------------------------------------------------------------------- probe set
def test_neural_probe_resizes_every_block_the_same_way_and_keeps_its_data(tmp_path):
    sim = simulate_neural(neuroids_per_region=4, repetitions=3, **SMALL)
    write_neural(tmp_path / "sim.nc", sim)
    other = tiny()  # 8 x 8 images: resized up to the network size like any other
    write_neural(tmp_path / "rec.nc", other)
    probe = neural_probe({"simulated": tmp_path / "sim.nc", "rec": tmp_path / "rec.nc"})
    assert probe["images"].shape == (72 + 6, 32, 32, 3)
    np.testing.assert_array_equal(probe["labels"], np.repeat([0, 1], [72, 6]))
    np.testing.assert_array_equal(probe["images"][:72], sim.images)  # 32 -> 32: unchanged
    from ssltrace.data.neural import resize_images

    np.testing.assert_array_equal(probe["images"][72:], resize_images(other.images, 32))
    block = probe_block_data(probe, 1)
    back = read_neural(tmp_path / "rec.nc")
    np.testing.assert_array_equal(block.responses, back.responses)
    np.testing.assert_array_equal(block.region, back.region)
    np.testing.assert_array_equal(block.groups, back.groups)
    assert probe_block_data(probe, 0).simulated.startswith("SIMULATED")


def test_cli_simulates_imports_and_builds_the_probe(tmp_path):
    sim = tmp_path / "sim.nc"
    options = '{"categories": 2, "objects_per_category": 2, "images_per_object": 3, "seed": 4}'
    assert main(["simulate-neural", "--out", str(sim), "--settings", options]) == 0
    expected = simulate_neural(seed=4, categories=2, objects_per_category=2, images_per_object=3)
    np.testing.assert_array_equal(read_neural(sim).responses, expected.responses)
    nc, csv, zpath, *_ = brainio_files(tmp_path)
    out = tmp_path / "imported.nc"
    args = ["import-neural", "--assembly", str(nc), "--stimuli", str(csv), "--images"]
    args += [str(zpath), "--out", str(out), "--split-column", "variation"]
    assert main([*args, "--report-values", "6"]) == 0
    imported = read_neural(out)
    assert imported.responses.shape == (3, 6, 5) and imported.split.tolist().count("report") == 2
    probe = tmp_path / "neural.npz"
    args = ["neural-probe", "--neural", f"sim={sim}", "--neural", f"rec={out}", "--out"]
    assert main([*args, str(probe), "--settings", '{"image_size": 32}']) == 0
    assert io.load_npz(probe)["class_names"].tolist() == ["sim", "rec"]


def test_flattened_maps_unflatten_to_the_layer_outputs(tmp_path):
    """The neural probe's full maps (extract pooling `flatten`), unflattened with the shape the
    extraction records, equal the modules' outputs in a plain forward pass."""
    net = write_checkpoint(tmp_path / "epoch_000.pt")
    write_neural(tmp_path / "sim.nc", simulate_neural(neuroids_per_region=4, **SMALL))
    io.save_npz(tmp_path / "neural.npz", neural_probe({"sim": tmp_path / "sim.nc"}))
    out = tmp_path / "acts" / "epoch_000.npz"
    extract_many(
        [tmp_path / "epoch_000.pt"],
        {"neural": tmp_path / "neural.npz"},
        {"neural": [out]},
        pooling={"neural": "flatten"},
        log=quiet,
    )
    acts = io.load_npz(out)
    loaded, _ = load_network(tmp_path / "epoch_000.pt", torch.device("cpu"))
    outputs = {}
    for name, module in loaded.layer_modules().items():
        module.register_forward_hook(lambda _m, _i, o, name=name: outputs.__setitem__(name, o))
    from ssltrace.augment import Augmenter

    images = torch.from_numpy(io.load_npz(tmp_path / "neural.npz")["images"])
    with torch.no_grad():
        loaded.eval().probe_forward(Augmenter(None, "cpu").plain(images))
    for layer in ("stem", "layer2", "pool"):
        maps = feature_map(acts[layer], acts[f"shape_{layer}"])
        expected = outputs[layer].numpy()
        expected = expected.reshape(*expected.shape, 1, 1) if expected.ndim == 2 else expected
        np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)
    assert net is not None


# ----------------------------------------------------------------------------- predictivity
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A random network's activations of 160 simulated images, and a neural file whose region
    `planted` is a linear map of layer `pool` plus noise at a known reliability, and whose
    region `random` is unrelated to any feature."""
    root = tmp_path_factory.mktemp("planted")
    write_checkpoint(root / "epoch_000.pt")
    sim = simulate_neural(categories=4, objects_per_category=5, images_per_object=8)
    write_neural(root / "sim.nc", sim)
    io.save_npz(root / "images.npz", neural_probe({"sim": root / "sim.nc"}))
    extract_many(
        [root / "epoch_000.pt"],
        {"neural": root / "images.npz"},
        {"neural": [root / "first" / "epoch_000.npz"]},
        pooling={"neural": "flatten"},
        log=quiet,
    )
    feats = io.load_npz(root / "first" / "epoch_000.npz")["pool"].astype(np.float64)
    rng = np.random.default_rng(3)
    linear = (feats - feats.mean(0)) @ rng.standard_normal((feats.shape[1], 12))
    signal = np.concatenate([linear, rng.standard_normal((len(feats), 12))], axis=1)
    signal = (signal - signal.mean(0)) / signal.std(0)
    truth = np.full(24, 0.8)
    responses = _add_trial_noise(signal, truth, 6, 0.0, rng)
    data = NeuralData(
        images=sim.images,
        responses=responses,
        region=np.repeat(["planted", "random"], 12),
        neuroid_id=np.array([f"u{i}" for i in range(24)]),
        groups=sim.groups,
        grouping="object_name",
        source="planted",
    )
    write_neural(root / "planted.nc", data)
    io.save_npz(root / "neural.npz", neural_probe({"toy": root / "planted.nc"}))
    acts = root / "acts" / "epoch_000.npz"
    extract_many(
        [root / "epoch_000.pt"],
        {"neural": root / "neural.npz"},
        {"neural": [acts]},
        pooling={"neural": "flatten"},
        log=quiet,
    )
    return root


def run_predictivity(root, **over):
    analysis = Predictivity(settings("predictivity", **({"readouts": ["ridge_pca"]} | over)))
    job = Job("net", 0, [0], {"neural": root / "acts", "probe": root / "neural.npz"})
    job.log = quiet
    run_job(analysis, job, root / "pred.tsv", {"scores": root / "scores.npz"})
    return pd.read_csv(root / "pred.tsv", sep="\t"), io.load_npz(root / "scores.npz")


def test_predictivity_recovers_the_planted_layer_and_reliability(planted):
    table, scores = run_predictivity(planted)
    ceiled = table[table.metric == "ridge_pca_ceiled"].pivot(
        index="layer", columns="probe", values="value"
    )
    assert ceiled["toy:planted"].idxmax() == "pool"
    assert ceiled.loc["pool", "toy:planted"] > 0.85
    assert abs(ceiled.loc["pool", "toy:random"]) < 0.15
    ceiling = table[(table.metric == "ridge_pca_ceiling") & (table.layer == "pool")]
    np.testing.assert_allclose(ceiling.value, 0.8, atol=0.06)  # the planted reliability
    n_layers = len(io.load_npz(planted / "acts" / "epoch_000.npz")["layers"])
    assert scores["scores"].shape == (1, 2, 1, n_layers, 24)
    assert scores["region"][0] == "toy:planted" and scores["kinds"].tolist() == ["raw", "ceiled"]


def test_predictivity_rows_equal_the_library_on_the_layer(planted):
    """The analysis scores each block's own images with the library's functions: its rows and
    per-neuroid matrix equal a direct score_layer + region_summaries call (up to float32
    PCA round-off, which differs with the BLAS thread count)."""
    table, scores = run_predictivity(planted, bootstrap=50)
    probe = io.load_npz(planted / "neural.npz")
    acts = io.load_npz(planted / "acts" / "epoch_000.npz")
    s = PredictivitySettings(bootstrap=50)
    data = probe_block_data(probe, 0)
    direct = score_layer(acts["layer3"], data, "ridge_pca", dataset_ceiling(data, s), s)
    layer = scores["layers"].tolist().index("layer3")
    np.testing.assert_allclose(scores["scores"][0, 0, 0, layer], direct.raw, atol=1e-4)
    np.testing.assert_allclose(scores["scores"][0, 1, 0, layer], direct.ceiled, atol=1e-4)
    for summary in region_summaries(direct, 50, 0):
        rows = table[(table.layer == "layer3") & (table.probe == f"toy:{summary.region}")]
        got = dict(zip(rows.metric, rows.value, strict=True))
        assert got["ridge_pca_ceiled"] == pytest.approx(summary.ceiled_median, abs=1e-4)
        assert got["ridge_pca_se"] == pytest.approx(summary.se, abs=1e-4)
        assert got["ridge_pca_n"] == 12


def test_predictivity_without_ceiling_reports_raw_r_only(planted):
    table, scores = run_predictivity(planted, ceiling=False)
    assert table[table.metric == "ridge_pca_ceiled"].value.isna().all()
    assert table[table.metric == "ridge_pca_r"].value.notna().all()
    assert np.isnan(scores["ceiling"]).all()


def test_epochs_are_cached_by_content(planted, tmp_path):
    """A rerun loads each epoch's result from the cache; other neural data (here: the same
    images with rescaled responses, whose scores and ceilings are the same) is a new key."""
    logs: list[str] = []
    analysis = Predictivity(settings("predictivity", readouts=["ridge_pca"], bootstrap=20))
    inputs = {"neural": planted / "acts", "probe": planted / "neural.npz"}
    for _ in range(2):
        job = Job("net", 0, [0], inputs, cache_dir=tmp_path / "cache", log=logs.append)
        run_job(analysis, job, tmp_path / "p.tsv", {"scores": tmp_path / "s.npz"})
    assert [line.endswith("cached") for line in logs] == [False, True]
    probe = io.load_npz(planted / "neural.npz")
    probe["b0_responses"] = probe["b0_responses"] * 2.0  # same images and correlations
    io.save_npz(tmp_path / "other.npz", probe)
    job = Job("net", 0, [0], {**inputs, "probe": tmp_path / "other.npz"})
    job.cache_dir, job.log = tmp_path / "cache", logs.append
    run_job(analysis, job, tmp_path / "p.tsv", {"scores": tmp_path / "s.npz"})
    assert not logs[-1].endswith("cached")


def test_factorised_readout_runs_on_the_full_maps(planted):
    table, _ = run_predictivity(
        planted,
        readouts=["factorised_map"],
        factorised_steps=150,
        weight_decays=[1e-3],
        outer_folds=3,
    )
    ceiled = table[table.metric == "factorised_map_ceiled"].pivot(
        index="layer", columns="probe", values="value"
    )
    # the planted map is a linear function of `pool` = the spatial mean of layer4's map,
    # which a spatial x channel mask expresses exactly
    assert ceiled.loc["pool", "toy:planted"] > 0.7
    assert ceiled.loc[["pool", "layer4"], "toy:planted"].max() > ceiled["toy:random"].max()


# ----------------------------------------------------------------------------- behaviour
def test_behaviour_equals_the_library_for_the_human_probe_and_a_user_set(tmp_path):
    import xarray as xr

    from ssltrace.data import prepare_human
    from ssltrace.splits import write_probe

    write_checkpoint(tmp_path / "epoch_000.pt")
    prepare_human("synthetic", tmp_path, tmp_path / "human.npz", per_class=12)
    write_probe(
        "human", tmp_path / "human.npz", None, tmp_path / "h.npz", images_per_class=12, seed=0
    )
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 3
    counts = rng.multinomial(20, [0.6, 0.2, 0.2], size=30)
    counts = np.stack([np.roll(c, k) for c, k in zip(counts, labels, strict=True)])
    user = xr.Dataset(
        {
            "images": (
                ("presentation", "height", "width", "channel"),
                rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
            ),
            "choice_counts": (("presentation", "choice"), counts),
        },
        coords={"choice": ["a", "b", "c"], "label": ("presentation", labels)},
    )
    write_dataset(user, tmp_path / "user.nc")
    write_neural(tmp_path / "sim.nc", simulate_neural(neuroids_per_region=4, **SMALL))
    neural = neural_probe({"sim": tmp_path / "sim.nc"}, {"user": tmp_path / "user.nc"})
    io.save_npz(tmp_path / "n.npz", neural)
    extract_many(
        [tmp_path / "epoch_000.pt"],
        {"human": tmp_path / "h.npz", "neural": tmp_path / "n.npz"},
        {
            "human": [tmp_path / "human" / "epoch_000.npz"],
            "neural": [tmp_path / "neural" / "epoch_000.npz"],
        },
        pooling={"neural": "flatten"},
        log=quiet,
    )
    s = settings("behaviour", splits=20)
    inputs = {"human": tmp_path / "human", "human_probe": tmp_path / "h.npz"}
    inputs |= {"neural": tmp_path / "neural", "neural_probe": tmp_path / "n.npz"}
    job = Job("net", 0, [0], inputs, log=quiet)
    run_job(Behaviour(s), job, tmp_path / "b.tsv", {})
    table = pd.read_csv(tmp_path / "b.tsv", sep="\t")
    assert set(table.probe) == {"human", "user"} and set(table.layer) == {"pool"}
    human = io.load_npz(tmp_path / "h.npz")
    feats = io.load_npz(tmp_path / "human" / "epoch_000.npz")["pool"]
    probs = model_probabilities(feats, human["labels"], 10, None, 10, 1.0, 0)
    direct = behavioural_consistency(probs, human["human_counts"], human["labels"], n_splits=20)
    got = table[table.probe == "human"].set_index("metric").value
    for metric, value in direct.rows():
        assert got[metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric
    user_rows = table[table.probe == "user"].set_index("metric").value
    assert user_rows["behaviour_n_images"] == 30


# ----------------------------------------------------------------------------- checks
def ci_config(tmp_path, **neural) -> dict:
    cfg = sslconfig.merge_files([ROOT / "config.yaml", ROOT / "presets/ci.yaml"])
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["neural"] = {**cfg.get("neural", {}), **neural}
    return cfg


def expect_config_error(cfg, *words):
    with pytest.raises(ConfigError) as info:
        study.checked(cfg, deep=True)
    message = str(info.value)
    for word in words:
        assert word in message, message


def test_bad_neural_inputs_are_named_at_check_time(tmp_path):
    study.checked(ci_config(tmp_path), deep=True)  # the ci preset itself passes
    missing = tmp_path / "absent.nc"
    expect_config_error(
        ci_config(tmp_path, datasets={"rec": str(missing)}), "neural.datasets.rec", str(missing)
    )
    ds = _to_dataset(tiny(presentations=12))
    ds["responses"] = ds["responses"].mean("repetition")
    path = write_dataset(ds, tmp_path / "rank.nc")
    expect_config_error(
        ci_config(tmp_path, datasets={"rec": str(path)}), str(path), "'responses'", "rank 2"
    )
    write_neural(tmp_path / "one.nc", tiny(reps=1, presentations=12))
    one = ci_config(tmp_path, datasets={"rec": str(tmp_path / "one.nc")})
    expect_config_error(one, "neural.datasets.rec", "one.nc", "1 repetition")
    one["predictivity"] = {**one.get("predictivity", {}), "ceiling": False}
    study.checked(one, deep=True)  # raw r only: accepted
    ds = _to_dataset(tiny(presentations=12))
    ds.attrs["regions"] = "V4,IT,V1"
    path = write_dataset(ds, tmp_path / "regions.nc")
    expect_config_error(
        ci_config(tmp_path, datasets={"rec": str(path)}), "regions.nc", "'region'", "V1"
    )
    data = tiny(presentations=12)
    data.responses[:, :, 1] = np.nan
    write_neural(tmp_path / "nan.nc", data)
    expect_config_error(
        ci_config(tmp_path, datasets={"rec": str(tmp_path / "nan.nc")}),
        "nan.nc",
        "'responses'",
        "u1",
    )
    expect_config_error(ci_config(tmp_path, datasets={"simulated": None}), "neural.datasets")
    expect_config_error(ci_config(tmp_path, behaviour={"b": str(missing)}), "neural.behaviour.b")
    taken = ci_config(tmp_path, behaviour={"human": str(missing)})
    expect_config_error(taken, "neural.behaviour.human", "taken")
    few = ci_config(tmp_path, simulated={"repetitions": 1})
    expect_config_error(few, "neural.simulated.repetitions")


# ----------------------------------------------------------------------------- validation
@pytest.mark.slow
def test_v1_like_is_best_predicted_by_an_earlier_layer_than_it_like_after_training(tmp_path):
    """Issue 17's validation on the simulated set: after supervised training, the V1-like
    (Gabor) units are best predicted by an earlier layer than the IT-like (category) units.

    No trained fixture exists (the CI study trains 2 epochs on 16 images per class, too
    little to learn the categories), so a width-0.125 ResNet-18 is trained here for 6 epochs
    (Adam) on the 20 fine classes of the 4 synthetic categories the simulated set shows
    (400 images, 24 units per region). Measured (ridge readout, ceiled medians): untrained,
    IT-like peaks at head_fc1 0.22 and V1-like at layer2 0.25, flat over layers; trained,
    V1-like peaks at layer3 (0.38) and IT-like at pool (0.45), IT-like rising from 0.16 at
    the stem. The order, not the numbers, is asserted.
    """
    from ssltrace.data import prepare_dataset
    from ssltrace.training import train_run

    prepare_dataset(
        "synthetic", tmp_path, tmp_path / "syn.npz", train_per_class=30, test_per_class=2
    )
    split = {"seed": 0, "known_fine": list(range(20)), "novel_fine": [99]}
    io.write_json(tmp_path / "split.json", split)
    cfg = sslconfig.validate(
        {
            **sslconfig.read_file(ROOT / "config.yaml"),
            "architecture": {"name": "resnet18", "width": 0.125},
            "methods": ["supervised"],
            "method_settings": {},
        }
    )
    cfg["train"].update(
        epochs=6,
        batch_size=64,
        device="cpu",
        compile=False,
        deterministic=True,
        optimizer={"name": "adam", "lr": 3e-3, "weight_decay": 1e-6},
        schedule={"name": "cosine", "warmup_epochs": 0},
    )
    run = study.run_settings(cfg, "supervised", 0)
    train_run(run, tmp_path / "syn.npz", tmp_path / "split.json", tmp_path / "run", quiet)
    sim = simulate_neural(
        categories=4,
        objects_per_category=5,
        images_per_object=20,
        neuroids_per_region=24,
        repetitions=6,
    )
    write_neural(tmp_path / "sim.nc", sim)
    io.save_npz(tmp_path / "neural.npz", neural_probe({"simulated": tmp_path / "sim.nc"}))
    extract_many(
        [tmp_path / "run" / "checkpoints" / "epoch_006.pt"],
        {"neural": tmp_path / "neural.npz"},
        {"neural": [tmp_path / "acts" / "epoch_006.npz"]},
        pooling={"neural": "flatten"},
        log=quiet,
    )
    s = settings("predictivity", readouts=["ridge_pca"], ceiling_splits=20, bootstrap=20)
    job = Job("supervised", 0, [6], {"neural": tmp_path / "acts", "probe": tmp_path / "neural.npz"})
    job.log = quiet
    run_job(Predictivity(s), job, tmp_path / "p.tsv", {"scores": tmp_path / "s.npz"})
    table = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    ceiled = table[table.metric == "ridge_pca_ceiled"].pivot(
        index="layer", columns="probe", values="value"
    )
    order = list(io.load_npz(tmp_path / "s.npz")["layers"])
    best = {region: order.index(ceiled[region].idxmax()) for region in ceiled.columns}
    print(ceiled.loc[order].round(3))  # shown with -s: the margins behind the order
    assert best["simulated:V1-like"] < best["simulated:IT-like"], ceiled.loc[order]
    # unit by unit too: the V1-like units' best layers lie earlier on average (measured mean
    # position 2.9 vs 4.4; the region medians' peaks, layer3 vs pool, are closer calls)
    arrays = io.load_npz(tmp_path / "s.npz")
    per_unit = np.nanargmax(arrays["scores"][0, 1, 0], axis=0)
    v1 = per_unit[arrays["region"] == "simulated:V1-like"].mean()
    assert v1 < per_unit[arrays["region"] == "simulated:IT-like"].mean()
