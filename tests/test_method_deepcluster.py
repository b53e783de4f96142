"""DeepCluster: its loss against eq. 1 written out, PCA whitening against scikit-learn, the
cluster-balanced sampler and the Sobel filter on planted cases, the per-epoch clustering step,
bad settings, a short training run and a kill-and-resume that ends bit-identical."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA

from ssltrace import checks, config
from ssltrace.augment import Augmenter
from ssltrace.config import defaults
from ssltrace.data import prepare_dataset
from ssltrace.io import save_npz, torch_load, write_json
from ssltrace.kmeans import kmeans
from ssltrace.losses.deepcluster import deepcluster_loss
from ssltrace.methods import METHODS, EpochContext, build_method, describe
from ssltrace.methods.deepcluster import (
    DeepCluster,
    SobelFilter,
    balanced_order,
    n_clusters,
    pca_whiten,
    preprocess_features,
)
from ssltrace.models import build_backbone
from ssltrace.network import build_network
from ssltrace.splits import write_split
from ssltrace.training import train_run

ARCH = {"name": "resnet18", "width": 0.125}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions on a shared 2-core machine: a second thread mostly spins and waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- The loss (eq. 1) ---------------------------------------------------------------------


def test_loss_is_the_cross_entropy_on_pseudo_labels_written_out():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.0], [-3.0, 4.0, 1.0, 2.0]])
    labels = torch.tensor([0, 3, 1])
    total = 0.0
    for i in range(3):
        partition = sum(math.exp(logits[i, c].item()) for c in range(4))
        total += -logits[i, labels[i]].item() + math.log(partition)
    out = deepcluster_loss(logits, labels)
    assert out["invariance"].item() == pytest.approx(total / 3, rel=1e-6)
    assert out["regularisation"].item() == 0.0
    assert out["loss"].item() == pytest.approx(total / 3, rel=1e-6)


@pytest.mark.parametrize(
    "logits, labels, match",
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), "logits must be a 2-D tensor"),
        (torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), r"pseudo_labels must be \[3\]"),
    ],
)
def test_loss_rejects_bad_shapes(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        deepcluster_loss(logits, labels)


# --- Preprocessing: PCA whitening + l2 (§3.4) ---------------------------------------------


def _correlated(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3.0, 0.2, d)[:, None]
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 5


def test_pca_whitening_matches_scikit_learn():
    x = _correlated()
    theirs = PCA(n_components=5, whiten=True, svd_solver="full").fit_transform(x)
    ours = pca_whiten(torch.from_numpy(x), 5).numpy()
    # An axis's sign is arbitrary; scikit-learn's convention moved between versions.
    signs = np.sign((ours * theirs).sum(axis=0))
    np.testing.assert_allclose(ours * signs, theirs, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.cov(ours, rowvar=False), np.eye(5), atol=1e-8)
    # Ours: each axis's largest-magnitude loading is positive (the same data, the same signs).
    shuffled = pca_whiten(torch.from_numpy(x[::-1].copy()), 5).numpy()[::-1]
    np.testing.assert_allclose(shuffled, ours, rtol=1e-6, atol=1e-8)


def test_preprocessed_features_are_whitened_then_unit_length():
    x = torch.from_numpy(_correlated()).float()
    out = preprocess_features(x, 8)
    assert out.shape == (300, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(300))
    white = pca_whiten(x, 8)
    torch.testing.assert_close(out, white / white.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("dim, n", [(13, 300), (10, 10), (0, 300)])
def test_pca_dimension_beyond_the_rank_is_refused(dim, n):
    with pytest.raises(ValueError, match="pca_dim must be in"):
        pca_whiten(torch.randn(n, 12), dim)


# --- Cluster-balanced sampling (§3.3, the code's UnifLabelSampler) -----------------------


def test_balanced_order_draws_the_same_number_from_every_non_empty_cluster():
    sizes = [1, 3, 0, 40, 6]  # cluster 2 is empty
    labels = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))
    labels = labels[torch.randperm(50, generator=torch.Generator().manual_seed(0))]
    order = balanced_order(labels, 5, torch.Generator().manual_seed(1))
    assert order.shape == (50,) and order.dtype == torch.long
    counts = torch.bincount(labels[order], minlength=5).tolist()
    per_cluster = 50 // 4 + 1  # 13 from each of the 4 non-empty clusters = 52, cut to 50
    assert counts[2] == 0 and sum(counts) == 50
    assert all(per_cluster - 2 <= counts[c] <= per_cluster for c in (0, 1, 3, 4)), counts
    big = order[labels[order] == 3]  # 40 > 13 images: drawn without replacement
    assert len(set(big.tolist())) == len(big)
    single = order[labels[order] == 0]  # 1 <= 13 images: drawn with replacement
    assert set(single.tolist()) == {int(torch.nonzero(labels == 0))}
    again = balanced_order(labels, 5, torch.Generator().manual_seed(1))
    other = balanced_order(labels, 5, torch.Generator().manual_seed(2))
    assert torch.equal(order, again) and not torch.equal(order, other)


def test_balanced_order_draws_members_of_a_small_cluster_uniformly():
    labels = torch.tensor([0] * 3 + [1] * 97)  # 51 draws from cluster 0, 3 images
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([balanced_order(labels, 2, g) for _ in range(40)])
    hits = torch.bincount(drawn[drawn < 3], minlength=3).double()
    expected = hits.sum() / 3  # about 680 each
    assert ((hits - expected).abs() < 4 * expected.sqrt()).all(), hits


# --- Settings -----------------------------------------------------------------------------


def test_default_k_is_proportional_to_the_training_set_with_a_floor():
    assert n_clusters(None, 1_281_167) == 10_009  # the paper's ~10,000 for ImageNet
    assert n_clusters(None, 25_000) == 195  # CIFAR-100, 10 known coarse classes
    assert n_clusters(None, 600) == 10
    assert n_clusters(None, 5) == 5
    assert n_clusters(7, 600) == 7


@pytest.mark.parametrize(
    "params, match",
    [
        ({"k": 1}, "'k' of 'deepcluster' must be >= 2"),
        ({"k": 0}, "'k' of 'deepcluster' must be a positive int or null"),
        ({"pca_dim": 600}, r"'pca_dim' of 'deepcluster' must be <= hidden_dim and feature_dim"),
        ({"feature_dim": 128}, r"'pca_dim' .* \(128, the rank of the clustered features\)"),
        ({"kmeans_iterations": 0}, "'kmeans_iterations' of 'deepcluster' must be > 0"),
        ({"sobel": 1}, "'sobel' of 'deepcluster' must be a boolean"),
    ],
)
def test_bad_settings_are_refused_before_any_model_is_built(params, match):
    with pytest.raises(ValueError, match=match):
        DeepCluster.resolve(params)


def test_pca_dim_above_the_feature_dimension_is_a_construction_error():
    with pytest.raises(ValueError, match="'pca_dim' of 'deepcluster'"):
        build_network(ARCH, "deepcluster", {"hidden_dim": 64, "pca_dim": 128}, 5)


@pytest.mark.parametrize(
    "params, n_images, match",
    [
        ({"k": 51}, 50, "'k' of 'deepcluster' must be <= the 50 training images"),
        ({"pca_dim": 50}, 50, "'pca_dim' of 'deepcluster' must be <= 49"),
        ({}, 1, "at least 2 training images"),
    ],
)
def test_settings_the_training_set_cannot_satisfy_are_refused(params, n_images, match):
    resolved = DeepCluster.resolve({"pca_dim": 32, **params})
    with pytest.raises(ValueError, match=match):
        DeepCluster.check_training_set(resolved, n_images, colour=True)
    DeepCluster.check_training_set(DeepCluster.resolve({"pca_dim": 32}), 600, colour=False)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"k": 400}, "'k' of 'deepcluster' must be <= the 320 training images"),
        ({"k": 1}, "'k' of 'deepcluster' must be >= 2"),
        ({"pca_dim": 400}, "'pca_dim' of 'deepcluster' must be <= 319"),
    ],
)
def test_config_check_names_the_key_and_the_limit(root, params, match):
    # What `snakemake -n` runs on the ci preset (320 known-class training images).
    settings = {"methods": ["deepcluster"], "method_settings": {"deepcluster": {"params": params}}}
    files = [root / "config.yaml", root / "presets" / "ci.yaml"]
    cfg = config.validate(config.merge_files(files, settings))
    with pytest.raises(
        config.ConfigError, match="'method_settings.deepcluster.params': .*" + match
    ):
        checks.check(cfg)


# --- Architecture: Sobel input, head, top layer --------------------------------------------


def test_sobel_filter_is_the_grey_level_gradient_of_the_reference_code():
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    grey = torch.nn.functional.pad(x.mean(dim=1), (1, 1, 1, 1))
    gx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    expected = torch.zeros(2, 2, 5, 6)
    for b in range(2):
        for i in range(5):
            for j in range(6):
                for u in range(3):
                    for v in range(3):
                        expected[b, 0, i, j] += gx[u][v] * grey[b, i + u, j + v]
                        expected[b, 1, i, j] += gx[v][u] * grey[b, i + u, j + v]
    torch.testing.assert_close(SobelFilter()(x), expected)


def test_the_backbone_takes_sobel_gradients_or_rgb():
    sobel = build_network(ARCH, "deepcluster", {}, 5)
    assert sobel.backbone.stem.conv.in_channels == 2 and DeepCluster.in_channels == 2
    rgb = build_network(ARCH, "deepcluster", {"sobel": False}, 5)
    assert rgb.backbone.stem.conv.in_channels == 3
    # Built directly on an RGB backbone (not through build_network), as the method tests do.
    direct = build_method("deepcluster", build_backbone("resnet18", width=0.125), {}, 5)
    assert direct.backbone.stem.conv.in_channels == 2
    x = torch.randn(4, 3, 32, 32)
    for method in (sobel, rgb, direct):
        method.eval()
        assert method.probe_forward(x).shape == (4, 512)
        assert method.head.fc1.in_features == method.backbone.out_dim


def _method_and_context(n=40, seed=0, params=None):
    torch.manual_seed(seed)
    method = build_network(ARCH, "deepcluster", {"pca_dim": 16, **(params or {})}, 5)
    method.setup(n)
    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    ctx = EpochContext(
        epoch=1,
        images=images,
        labels=torch.zeros(n, dtype=torch.long),
        plain=Augmenter({"preset": "seed000"}, "cpu").plain,
        generator=torch.Generator().manual_seed(5),
        optimizer=optimizer,
        batch_size=16,
    )
    return method, ctx


def test_before_epoch_clusters_plain_embeddings_and_redraws_the_top_layer():
    method, ctx = _method_and_context()
    assert method.k == 10  # the floor: 40 images / 128 rounds to 0
    # Momentum everywhere, as after an epoch of training.
    for p in method.parameters():
        p.grad = torch.ones_like(p)
    ctx.optimizer.step()
    bn = method.backbone.stem.bn.running_mean.clone()
    method.train()
    method.before_epoch(ctx)
    assert method.training  # eval only while embedding ...
    assert torch.equal(method.backbone.stem.bn.running_mean, bn)  # ... so BN stats unchanged
    # The same pipeline computed independently, with the generator in the same state.
    method.eval()
    with torch.no_grad():
        head = method.head(method.backbone(method.sobel(ctx.plain(ctx.images))))
    method.train()
    features = preprocess_features(head, 16)
    expected = kmeans(features, 10, torch.Generator().manual_seed(5), 20).labels
    assert torch.equal(method.pseudo_labels, expected)
    top = method.top_layer
    assert top.weight.shape == (10, 512) and torch.equal(top.bias, torch.zeros(10))
    assert 0.008 < top.weight.std().item() < 0.012  # N(0, 0.01^2), the code's init
    state = ctx.optimizer.state
    assert top.weight not in state and top.bias not in state
    assert "momentum_buffer" in state[method.backbone.stem.conv.weight]
    order = method.epoch_order(ctx)
    assert order.shape == (40,) and int(order.max()) < 40


def test_loss_needs_pseudo_labels_and_trains_every_part():
    method, ctx = _method_and_context()
    views = [torch.randn(8, 3, 32, 32)]
    with pytest.raises(RuntimeError, match="no pseudo-labels yet"):
        method.loss(views, None, torch.arange(8))
    method.before_epoch(ctx)
    with pytest.raises(ValueError, match="training-set index"):
        method.loss(views, None, None)
    out = method.loss(views, None, torch.arange(8))
    assert out["loss"].item() == pytest.approx(math.log(10), abs=0.2)  # a fresh N(0, 0.01) layer
    out["loss"].backward()
    for module in (method.backbone.stem.conv, method.head.fc1, method.top_layer):
        assert module.weight.grad.abs().sum() > 0


def test_checkpoints_hold_the_network_without_top_layer_or_labels():
    method, ctx = _method_and_context()
    method.before_epoch(ctx)
    state = method.state_dict()
    assert not any(k.startswith(("top_layer", "sobel")) for k in state)
    assert "pseudo_labels" not in state
    assert torch.equal(method.training_state()["pseudo_labels"], method.pseudo_labels)
    # Extraction rebuilds the network without setup; resuming loads into one with setup.
    build_network(ARCH, "deepcluster", {"pca_dim": 16}, 5).load_state_dict(state)
    resumed, _ = _method_and_context(seed=1)
    resumed.load_state_dict(state)
    resumed.load_training_state(method.training_state())
    assert torch.equal(resumed.pseudo_labels, method.pseudo_labels)


# --- Training ------------------------------------------------------------------------------


def _run(epochs, batch_size, optimizer, params, crop_scale=(0.08, 1.0)):
    train = {
        **defaults()["train"],
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "schedule": {"name": "constant"},
        "device": "cpu",
        "deterministic": True,
        "threads": 1,
        "compile": False,
    }
    return {
        "method": "deepcluster",
        "seed": 0,
        "method_params": params,
        "architecture": ARCH,
        "train": train,
        "augment": {"preset": "seed000", "crop_scale": list(crop_scale)},
    }


def test_short_training_run_lowers_the_loss(tmp_path):
    """Four epochs on 600 synthetic images (the 10 fine classes of 2 coarse ones).

    Only the loss is asserted. Fine-class NCC accuracy above the untrained network (epoch 0)
    by two binomial standard errors is not reliable at this scale: on training seeds 0-2, four
    to six epochs moved held-out fine NCC (mean of layer3, pool, head_fc1) by -0.01..+0.05,
    where two SE are 0.05 (300 test images); after 15 epochs (~65 s of CPU per run, beyond
    this file's budget) it had risen by 0.10, 0.15 and 0.08.
    """
    data, split = tmp_path / "synthetic.npz", tmp_path / "split.json"
    prepare_dataset("synthetic", tmp_path, data, train_per_class=60, test_per_class=1)
    write_split(data, split, n_known=2, n_novel=2, seed=0)
    adam = {"name": "adam", "lr": 3e-3, "weight_decay": 1e-6}
    run = _run(4, 32, adam, {"pca_dim": 32}, crop_scale=(0.25, 1.0))
    train_run(run, data, split, tmp_path / "run", log=lambda line: None)
    log = pd.read_csv(tmp_path / "run" / "train_log.tsv", sep="\t")
    assert list(log.epoch) == [1, 2, 3, 4]
    assert (log.regularisation == 0).all() and (log.loss == log.invariance).all()
    assert log.loss.iloc[0] > math.log(10) - 0.1  # a fresh 10-way classifier each epoch
    assert log.loss.iloc[-1] < log.loss.iloc[0] - 0.1, log.loss.tolist()


@pytest.fixture
def noise_data(tmp_path):
    """72 noise images, fine class i % 6; the 48 of the known classes make 3 batches of 16."""
    rng = np.random.default_rng(0)
    save_npz(
        tmp_path / "tiny.npz",
        {
            "train_images": rng.integers(0, 256, (72, 32, 32, 3), dtype=np.uint8),
            "train_fine": np.arange(72, dtype=np.int64) % 6,
            "test_images": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
            "test_fine": np.arange(6, dtype=np.int64),
        },
    )
    write_json(tmp_path / "split.json", {"seed": 0, "known_fine": [4, 0, 2, 5], "novel_fine": [1]})
    return tmp_path / "tiny.npz", tmp_path / "split.json"


def test_crash_mid_epoch_then_resume_is_bit_identical(noise_data, tmp_path):
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-5}
    run = _run(3, 16, sgd, {"pca_dim": 16})
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_run(run, *noise_data, straight, log=lambda line: None)

    def crash(epoch, step):
        if (epoch, step) == (2, 1):
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected crash"):
        train_run(run, *noise_data, resumed, log=lambda line: None, _on_step=crash)
    lines = []
    train_run(run, *noise_data, resumed, log=lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    for epoch in range(4):
        name = f"checkpoints/epoch_{epoch:03d}.pt"
        a, b = torch_load(straight / name)["state_dict"], torch_load(resumed / name)["state_dict"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (epoch, key)
    columns = ["epoch", "loss", "invariance", "regularisation", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(resumed / "train_log.tsv", sep="\t")[columns],
        pd.read_csv(straight / "train_log.tsv", sep="\t")[columns],
    )
    labels = [torch_load(d / ".state" / "resume.pt")["method_state"] for d in (straight, resumed)]
    assert torch.equal(labels[0]["pseudo_labels"], labels[1]["pseudo_labels"])


def test_registered_with_its_paper():
    assert METHODS.get("deepcluster") is DeepCluster
    assert DeepCluster.n_views == 1 and not DeepCluster.uses_labels
    assert "deepcluster: DeepCluster (Caron, Bojanowski, Joulin & Douze, 2018)" in describe()
