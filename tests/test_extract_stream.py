"""Bounded-memory extraction (issue 19): layers streamed to disk batch by batch, float16
storage, per-run PCA reduction and the distance distortion a reduction causes."""

import zipfile

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from test_extract import write_checkpoint, write_probe

from ssltrace import io, reduction
from ssltrace.analysis.base import read_activations
from ssltrace.extract import activations, extract_many, stream_activations
from ssltrace.network import load_network

QUIET = dict(device="cpu", log=lambda _: None)


def test_raw_array_member_is_byte_for_byte_np_save(tmp_path):
    for array in (np.arange(24, dtype=np.float32).reshape(4, 6), np.ones((3, 5), np.float16)):
        array.tofile(tmp_path / "a.raw")
        raw = io.RawArray(tmp_path / "a.raw", array.dtype, array.shape)
        io.save_npz(tmp_path / "raw.npz", {"x": raw, "y": np.int64(3)})
        io.save_npz(tmp_path / "mem.npz", {"x": array, "y": np.int64(3)})
        assert (tmp_path / "raw.npz").read_bytes() == (tmp_path / "mem.npz").read_bytes()
    with pytest.raises(ValueError, match="holds 30 bytes"):
        io.RawArray(tmp_path / "a.raw", np.float16, (4, 5))


def test_probe_images_are_read_by_row_slices_and_checked(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 5, 3), dtype=np.uint8)
    io.save_npz(tmp_path / "p.npz", {"labels": np.arange(7), "images": images})
    rows = io.load_npz_rows(tmp_path / "p.npz", "images")
    assert isinstance(rows, io.NpyRows) and len(rows) == 7
    np.testing.assert_array_equal(rows[2:6], images[2:6])
    np.testing.assert_array_equal(rows[5:100], images[5:])
    io.save_npz(tmp_path / "z.npz", {"images": images}, compress=True)  # deflated: loaded
    np.testing.assert_array_equal(io.load_npz_rows(tmp_path / "z.npz", "images"), images)
    data = bytearray((tmp_path / "p.npz").read_bytes())
    data[data.index(images[3].tobytes())] ^= 0xFF  # a flipped byte in image 3
    (tmp_path / "p.npz").write_bytes(bytes(data))
    with pytest.raises(io.ArtifactReadError, match="damaged"):
        io.load_npz_rows(tmp_path / "p.npz", "images")
    assert not (tmp_path / "p.npz").exists()  # removed, so that its job runs again


def test_streamed_layers_equal_the_in_memory_ones(tmp_path):
    write_checkpoint(tmp_path / "c.pt")
    write_probe(tmp_path / "p.npz", n=11)
    net, _ = load_network(tmp_path / "c.pt", torch.device("cpu"))
    images = io.load_npz(tmp_path / "p.npz")["images"]
    layers = list(net.layer_modules())
    whole = activations(net, images, layers, "avg2x2", batch_size=4)
    raws = stream_activations(net, images, layers, "avg2x2", 4, tmp_path / "spool")
    for layer in layers:
        np.testing.assert_array_equal(raws[layer].load(), whole[layer])
    half = stream_activations(net, images, layers, "avg2x2", 4, tmp_path / "h", dtype="float16")
    np.testing.assert_array_equal(half["pool"].load(), whole["pool"].astype(np.float16))


def test_float16_files_read_back_as_float32_and_leave_no_spool(tmp_path):
    write_checkpoint(tmp_path / "epoch_000.pt")
    write_probe(tmp_path / "p.npz")
    out = tmp_path / "acts" / "epoch_000.npz"
    for dtype, path in (("float32", tmp_path / "f32.npz"), ("float16", out)):
        extract_many(
            [tmp_path / "epoch_000.pt"],
            {"novel": tmp_path / "p.npz"},
            {"novel": [path]},
            dtype=dtype,
            batch_size=5,
            **QUIET,
        )
    stored = io.load_npz(out)
    assert stored["pool"].dtype == np.float16
    read = read_activations(out)
    assert read["pool"].dtype == np.float32
    full = io.load_npz(tmp_path / "f32.npz")["pool"]
    np.testing.assert_allclose(read["pool"], full, rtol=1e-3, atol=1e-3)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # spool folder removed


def test_pca_matches_scikit_learn():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((40, 300)) @ rng.standard_normal((300, 300))).astype(np.float32)
    fitted = reduction.fit_pca(x, 25)
    model = PCA(n_components=25, svd_solver="full").fit(x.astype(np.float64))
    scale = np.abs(model.transform(x)).max()
    np.testing.assert_allclose(
        reduction.apply_pca(x, fitted), model.transform(x), atol=1e-4 * scale
    )
    np.testing.assert_allclose(fitted["explained"], model.explained_variance_ratio_, rtol=1e-4)
    assert reduction.fit_pca(x, 100)["components"].shape == (40, 300)  # at most n components
    # At n - 1 components the fitted images' distances are kept exactly.
    full = reduction.fit_pca(x, 39)
    median, worst = reduction.distance_distortion(x, reduction.apply_pca(x, full))
    assert worst < 1e-4


def test_distance_distortion_on_planted_cases():
    x = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert reduction.distance_distortion(x, 1.1 * x) == pytest.approx((0.1, 0.1))
    moved = x.copy()
    moved[1] = [6.0, 0.0]  # distances 6, 4, sqrt(52): errors 1, 0, sqrt(52)/5 - 1
    median, worst = reduction.distance_distortion(x, moved)
    assert median == pytest.approx(np.sqrt(52) / 5 - 1) and worst == pytest.approx(1.0)
    # Duplicate images (distance 0) have no relative error and are left out.
    assert reduction.distance_distortion(np.vstack([x, x[:1]]), np.vstack([x, x[:1]])) == (0, 0)


def test_jl_distance_bound_holds_for_the_projection():
    from ssltrace.projection import project

    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((50, 20000)), 0).astype(np.float32)
    bound = reduction.jl_distance_bound(50, 2048)
    median, worst = reduction.distance_distortion(x, project(x, 2048, 0))
    assert 0 < median < worst <= bound < 0.2


def pca_study(tmp_path, **options):
    checkpoints = []
    for epoch in range(3):
        write_checkpoint(tmp_path / "ckpt" / f"epoch_{epoch:03d}.pt", epoch=epoch, seed=epoch)
        checkpoints.append(tmp_path / "ckpt" / f"epoch_{epoch:03d}.pt")
    write_probe(tmp_path / "p.npz", n=20)
    outs = [tmp_path / "acts" / f"epoch_{e:03d}.npz" for e in range(3)]
    extract_many(
        checkpoints,
        {"rdm": tmp_path / "p.npz"},
        {"rdm": outs},
        pooling="flatten",
        projection_dim=16,
        batch_size=6,
        reduction_kind="pca",
        **options,
        **QUIET,
    )
    return checkpoints, outs


def test_a_runs_extractions_share_one_stored_pca(tmp_path):
    checkpoints, outs = pca_study(tmp_path, reduction_fit_epoch=1, distortion=True)
    fitted = io.load_npz(tmp_path / "acts" / reduction.FILE)
    assert fitted["fit_epochs"].tolist() == [1]
    assert fitted["components_stem"].shape == (16, 8 * 32 * 32)
    images = io.load_npz(tmp_path / "p.npz")["images"]
    for epoch, out in enumerate(outs):
        net, _ = load_network(checkpoints[epoch], torch.device("cpu"))
        full = activations(net, images, ["stem", "pool"], "flatten", 20)
        acts = io.load_npz(out)
        basis = {"mean": fitted["mean_stem"], "components": fitted["components_stem"]}
        np.testing.assert_allclose(
            acts["stem"], reduction.apply_pca(full["stem"], basis), rtol=1e-4, atol=1e-4
        )
        median, worst, bound = acts["distortion_stem"]
        assert (median, worst) == pytest.approx(
            reduction.distance_distortion(full["stem"], acts["stem"]), rel=1e-4, abs=1e-6
        )
        assert np.isnan(bound)  # PCA has no bound known in advance
        assert "distortion_head_fc1" not in acts or acts["head_fc1"].shape[1] == 16
    # The fit epoch's distances are kept within PCA's truncation (16 of 19 dimensions).
    at_fit = io.load_npz(outs[1])["distortion_stem"]
    assert at_fit[1] < 0.5
    # A second extraction of the same run (e.g. after training longer) reuses the stored fit.
    before = (tmp_path / "acts" / reduction.FILE).stat().st_mtime_ns
    logs = []
    extract_many(
        checkpoints[:1],
        {"rdm": tmp_path / "p.npz"},
        {"rdm": [tmp_path / "acts" / "again.npz"]},
        pooling="flatten",
        projection_dim=16,
        reduction_kind="pca",
        reduction_fit_epoch=1,
        device="cpu",
        log=logs.append,
    )
    assert (tmp_path / "acts" / reduction.FILE).stat().st_mtime_ns == before
    assert any("reused" in line for line in logs)
    np.testing.assert_array_equal(
        io.load_npz(tmp_path / "acts" / "again.npz")["stem"], io.load_npz(outs[0])["stem"]
    )


def test_projection_distortion_is_recorded_with_its_bound(tmp_path):
    write_checkpoint(tmp_path / "epoch_000.pt")
    write_probe(tmp_path / "p.npz", n=20)
    out = tmp_path / "a.npz"
    extract_many(
        [tmp_path / "epoch_000.pt"],
        {"rdm": tmp_path / "p.npz"},
        {"rdm": [out]},
        pooling="flatten",
        projection_dim=1000,
        distortion=True,
        **QUIET,
    )
    acts = io.load_npz(out)
    median, worst, bound = acts["distortion_stem"]
    assert bound == pytest.approx(reduction.jl_distance_bound(20, 1000))
    assert 0 < median <= worst <= bound
    assert "distortion_pool" not in acts  # 64 wide: not reduced, nothing to measure
    with zipfile.ZipFile(out) as zf:  # figures come after every array written before
        assert zf.namelist()[-1].startswith("distortion_")


def test_pca_fit_epoch_must_be_a_saved_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="extract.reduction_fit_epoch: no checkpoint of epoch 7"):
        pca_study(tmp_path, reduction_fit_epoch=7)
    with pytest.raises(ValueError, match="extract.reduction: unknown reduction 'ica'"):
        extract_many([], {}, {}, reduction_kind="ica", **QUIET)


@pytest.mark.parametrize("method", ["autoencoder", "colorization"])
def test_decoder_methods_take_a_backbone_without_final_pooling(method):
    """presets/imagenet.yaml: seed 003's ResNet-18 without final pooling under every task."""
    from ssltrace.models.decoder import pre_pool
    from ssltrace.network import build_network

    arch = {"name": "resnet18_imagenet", "final_pool": False, "image_size": 64}
    params = {"image_size": 64} if method == "autoencoder" else {}
    net = build_network(arch, method, params, n_classes=4).eval()
    x = torch.randn(2, 1 if method == "colorization" else 3, 64, 64)
    feature_map, flat = pre_pool(net.backbone, x)
    assert feature_map.shape == (2, 512, 2, 2)
    torch.testing.assert_close(flat, net.backbone(x))  # the flattened map is its output
    with torch.no_grad():
        assert torch.isfinite(net.probe_forward(torch.randn(2, 3, 64, 64))).all()


def test_config_check_names_a_fit_epoch_no_run_saves():
    from ssltrace import study
    from ssltrace.checks import ConfigError, check
    from tests.conftest import ROOT

    cfg = study.load(ROOT / "config.yaml", ROOT / "presets/ci.yaml")
    cfg["extract"].update({"reduction": "pca", "reduction_fit_epoch": 2})
    check(cfg)  # ci trains 2 epochs: epoch 2 exists (untrained runs fit on their epoch 0)
    cfg["extract"]["reduction_fit_epoch"] = 3
    with pytest.raises(ConfigError, match="extract.reduction_fit_epoch.*'simclr'.*epoch 3"):
        check(cfg)


def test_untrained_run_fits_its_pca_on_its_only_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "ckpt" / "epoch_000.pt")
    write_probe(tmp_path / "p.npz", n=10)
    extract_many(
        [tmp_path / "ckpt" / "epoch_000.pt"],
        {"rdm": tmp_path / "p.npz"},
        {"rdm": [tmp_path / "acts" / "epoch_000.npz"]},
        pooling="flatten",
        projection_dim=8,
        reduction_kind="pca",
        reduction_fit_epoch=200,
        **QUIET,
    )
    assert io.load_npz(tmp_path / "acts" / reduction.FILE)["fit_epochs"].tolist() == [0]


def test_pca_fitted_on_several_epochs_is_the_pca_of_their_stacked_activations(tmp_path):
    checkpoints, outs = pca_study(tmp_path, reduction_fit_epoch=[0, 2], distortion=True)
    fitted = io.load_npz(tmp_path / "acts" / reduction.FILE)
    assert fitted["fit_epochs"].tolist() == [0, 2]
    images = io.load_npz(tmp_path / "p.npz")["images"]
    stem = []
    for epoch in (0, 2):
        net, _ = load_network(checkpoints[epoch], torch.device("cpu"))
        stem.append(activations(net, images, ["stem"], "flatten", 20)["stem"])
    model = PCA(n_components=16, svd_solver="full").fit(np.concatenate(stem).astype(np.float64))
    basis = {"mean": fitted["mean_stem"], "components": fitted["components_stem"]}
    scale = np.abs(model.transform(stem[0])).max()
    np.testing.assert_allclose(
        np.abs(reduction.apply_pca(stem[0], basis)),
        np.abs(model.transform(stem[0])),  # component signs are a convention
        atol=1e-3 * scale,
    )
    np.testing.assert_allclose(
        io.load_npz(outs[0])["stem"], reduction.apply_pca(stem[0], basis), atol=1e-3 * scale
    )
    with pytest.raises(ValueError, match="no checkpoint of epoch 9"):
        pca_study(tmp_path / "b", reduction_fit_epoch=[0, 9])
