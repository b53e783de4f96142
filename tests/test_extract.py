"""Extraction: hooks capture exactly the named layers' outputs, pooled as configured."""

import numpy as np
import pytest
import torch

from ssltrace import io
from ssltrace.augment import Augmenter
from ssltrace.extract import extract_many, pool
from ssltrace.network import build_network, load_network

ARCH = {"name": "resnet18", "width": 0.125}


def write_checkpoint(path, method="simclr", epoch=0, seed=0):
    torch.manual_seed(seed)
    net = build_network(ARCH, method, {}, n_classes=6)
    io.torch_save(
        path,
        {
            "format": "ssltrace-checkpoint/1",
            "method": method,
            "seed": seed,
            "epoch": epoch,
            "architecture": ARCH,
            "method_params": {},
            "n_classes": 6,
            "state_dict": net.state_dict(),
        },
    )
    return net


def write_probe(path, n=12):
    rng = np.random.default_rng(0)
    io.save_npz(
        path,
        {
            "images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "labels": np.arange(n) % 3,
            "coarse": np.arange(n) % 3 // 2,
            "class_names": np.array(["a", "b", "c"]),
            "coarse_names": np.array(["x", "y"]),
        },
    )


def test_pool_modes_match_plain_reductions():
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(pool(x, "mean"), x.mean(dim=(2, 3)))
    assert torch.equal(pool(x, "max"), x.flatten(2).max(dim=2).values)
    assert torch.equal(pool(x, "flatten"), x.reshape(2, -1))
    two = pool(x, "avg2x2").reshape(2, 4, 2, 2)
    assert torch.allclose(two[:, :, 0, 1], x[:, :, :3, 3:].mean(dim=(2, 3)))
    v = torch.randn(3, 5)
    assert pool(v, "mean") is v
    with pytest.raises(ValueError, match="pooling"):
        pool(x, "median")


def test_extracted_layers_equal_a_manual_forward(tmp_path):
    net = write_checkpoint(tmp_path / "epoch_000.pt").eval()
    write_probe(tmp_path / "probe.npz")
    extract_many(
        [tmp_path / "epoch_000.pt"],
        {"novel": tmp_path / "probe.npz"},
        {"novel": [tmp_path / "a.npz"]},
        batch_size=5,
        device="cpu",
        log=lambda _: None,
    )
    acts = io.load_npz(tmp_path / "a.npz")
    layers = acts["layers"].tolist()
    assert layers == [*net.backbone.layer_names, "head_fc1", "head_fc2"]
    probe = io.load_npz(tmp_path / "probe.npz")
    # the training augmenter's own normalisation, without augmentation
    x = Augmenter(None, "cpu").plain(torch.from_numpy(probe["images"]))
    with torch.no_grad():
        b = net.backbone
        stem = b.layer_modules()["stem"](x)
        feats = b(x)
        fc1 = net.head.fc1(feats)
        head_out = net.head(feats)
    assert np.allclose(acts["stem"], stem.mean(dim=(2, 3)).numpy(), atol=1e-5)
    assert np.allclose(acts["pool"], feats.numpy(), atol=1e-5)
    assert np.allclose(acts["head_fc1"], fc1.numpy(), atol=1e-5)
    # the head's output: the vector the loss sees
    assert np.allclose(acts["head_fc2"], head_out.numpy(), atol=1e-5)
    assert acts["pool"].shape == (12, net.backbone.out_dim)
    assert int(acts["epoch"]) == 0 and (acts["labels"] == probe["labels"]).all()


def test_network_round_trips_through_a_checkpoint(tmp_path):
    net = write_checkpoint(tmp_path / "c.pt", method="supervised")
    loaded, ckpt = load_network(tmp_path / "c.pt", torch.device("cpu"))
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert ckpt["method"] == "supervised"


def test_pooling_per_probe_set_and_every_layer_distinct(tmp_path):
    """Default pooling (config.yaml): quadrant means everywhere, full maps for the RDM probe;
    layer4 is then not the pool layer again (issue 18, item 4)."""
    net = write_checkpoint(tmp_path / "epoch_000.pt").eval()
    write_probe(tmp_path / "probe.npz")
    out = {"novel": [tmp_path / "n.npz"], "rdm": [tmp_path / "r.npz"]}
    probes = {"novel": tmp_path / "probe.npz", "rdm": tmp_path / "probe.npz"}
    extract_many(
        [tmp_path / "epoch_000.pt"],
        probes,
        out,
        pooling={"default": "avg2x2", "rdm": "flatten"},
        device="cpu",
        projection_dim=None,
        log=lambda _: None,
    )
    novel, rdm = io.load_npz(out["novel"][0]), io.load_npz(out["rdm"][0])
    assert str(novel["pooling"]) == "avg2x2" and str(rdm["pooling"]) == "flatten"
    x = Augmenter(None, "cpu").plain(torch.from_numpy(io.load_npz(probes["novel"])["images"]))
    with torch.no_grad():
        maps = {}
        h = x
        for name, module in net.backbone.layer_modules().items():
            h = maps[name] = module(h)
    layer4 = maps["layer4"]  # [12, 64, 4, 4]
    quadrants = layer4.reshape(12, 64, 2, 2, 2, 2).mean(dim=(3, 5)).flatten(1)
    np.testing.assert_allclose(novel["layer4"], quadrants.numpy(), atol=1e-5)
    np.testing.assert_allclose(rdm["layer4"], layer4.flatten(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(rdm["stem"], maps["stem"].flatten(1).numpy(), atol=1e-5)
    for acts in (novel, rdm):
        names = acts["layers"].tolist()
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                same = acts[a].shape == acts[b].shape and np.allclose(acts[a], acts[b])
                assert not same, f"{a} and {b} hold the same vectors"


def test_wide_layers_are_projected_with_the_seeded_projection(tmp_path):
    from ssltrace.projection import project

    write_checkpoint(tmp_path / "epoch_000.pt")
    write_probe(tmp_path / "probe.npz")
    common = dict(pooling="flatten", device="cpu", log=lambda _: None)
    extract_many(
        [tmp_path / "epoch_000.pt"],
        {"rdm": tmp_path / "probe.npz"},
        {"rdm": [tmp_path / "full.npz"]},
        projection_dim=None,
        **common,
    )
    extract_many(
        [tmp_path / "epoch_000.pt"],
        {"rdm": tmp_path / "probe.npz"},
        {"rdm": [tmp_path / "proj.npz"]},
        projection_dim=1000,
        projection_seed=3,
        **common,
    )
    full, projected = io.load_npz(tmp_path / "full.npz"), io.load_npz(tmp_path / "proj.npz")
    assert full["stem"].shape == (12, 8 * 32 * 32) and projected["stem"].shape == (12, 1000)
    np.testing.assert_allclose(projected["stem"], project(full["stem"], 1000, 3), atol=1e-4)
    np.testing.assert_array_equal(projected["pool"], full["pool"])  # 64 wide: unchanged


def test_unknown_pooling_names_the_probe_set(tmp_path):
    write_checkpoint(tmp_path / "epoch_000.pt")
    write_probe(tmp_path / "probe.npz")
    with pytest.raises(ValueError, match="extract.pooling.*'rdm'"):
        extract_many(
            [tmp_path / "epoch_000.pt"],
            {"rdm": tmp_path / "probe.npz"},
            {"rdm": [tmp_path / "x.npz"]},
            pooling={"rdm": "median"},
            device="cpu",
        )
