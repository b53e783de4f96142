"""Pretext, predictive and generative methods of seed 003: auto-encoder, colourisation (Zhang et
al. 2016), relative position (Doersch et al. 2015) and CPC (van den Oord et al. 2018; Hénaff et
al. 2019). Their losses against the published formulas written out as loops, the ab bins and
the colour prior, the 3 x 3 grid and the CPC context checked for leakage, extraction, bad
settings, and a short training run per method that lowers the loss and resumes bit-identical
after a kill."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.color import rgb2lab

from ssltrace import config as sslconfig
from ssltrace import io, study
from ssltrace.augment import Augmenter
from ssltrace.config import defaults
from ssltrace.data import prepare_dataset
from ssltrace.extract import activations
from ssltrace.losses import colorization as col
from ssltrace.losses.autoencoder import autoencoder_loss
from ssltrace.losses.cpc import cpc_loss
from ssltrace.losses.relative_position import relative_position_loss
from ssltrace.methods import METHODS, EpochContext, describe
from ssltrace.methods.cpc import ColumnGRUContext, PixelCNNContext, crop_grid
from ssltrace.methods.relative_position import CENTRE, NEIGHBOURS, crop, sample_pairs
from ssltrace.models.decoder import ResNetDecoder, pre_pool
from ssltrace.network import build_network, layer_names, load_network
from ssltrace.splits import write_split
from ssltrace.training import train_run
from ssltrace.training.data import load_training_set
from tests.test_config import base, put

ARCH = {"name": "resnet18", "width": 0.125}
PRETEXT = ("autoencoder", "colorization", "relative_position", "cpc")
# Small but complete settings (a narrow CPC context keeps its CPU cost near the others').
SMALL = {
    "autoencoder": {},
    "colorization": {},
    "relative_position": {},
    "cpc": {"context_dim": 32, "context_blocks": 2},
}
# sha256 of Zhang et al.'s resources/pts_in_hull.npy as an int64 [313, 2] array (its bytes).
PTS_IN_HULL_SHA256 = "2a39983ed60d5b52b717842d56d5f766982289e6d5a609582155f437cecc1045"


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions on a shared 2-core machine: a second thread mostly spins and waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_net(method: str, seed: int = 0, **params):
    torch.manual_seed(seed)
    return build_network(ARCH, method, {**SMALL[method], **params}, 4)


def uint8_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def assert_parts(out: dict, invariance: float, regularisation: float, rel: float = 1e-6) -> None:
    assert out["invariance"].item() == pytest.approx(invariance, rel=rel, abs=1e-9)
    assert out["regularisation"].item() == pytest.approx(regularisation, rel=rel, abs=1e-9)
    assert out["loss"].item() == pytest.approx(invariance + regularisation, rel=rel, abs=1e-9)


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


def dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ auto-encoder


def test_autoencoder_loss_matches_the_formula():
    """seed 003: L2 reconstruction + w x L1 of the code, each per element (the authors' code:
    tf.nn.l2_loss(x' - x) / numel and w sum|h| / numel(h))."""
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g)
    h = torch.randn(2, 5, generator=g)
    squares = sum(
        (x_hat[b, c, i, j].item() - x[b, c, i, j].item()) ** 2
        for b in range(2) for c in range(3) for i in range(2) for j in range(2)
    )  # fmt: skip
    l1 = sum(abs(h[b, k].item()) for b in range(2) for k in range(5))
    assert_parts(autoencoder_loss(x_hat, x, h, 1e-4), squares / 2 / 24, 1e-4 * l1 / 10)
    assert autoencoder_loss(x, x, h, 0.0)["loss"].item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        autoencoder_loss(x_hat[:, :2], x, h, 1e-4)


def test_autoencoder_code_and_reversed_resnet_decoder():
    ae = make_net("autoencoder")
    x = torch.randn(3, 3, 32, 32)
    reconstruction, hidden = ae.reconstruct(x)
    assert reconstruction.shape == x.shape and hidden.shape == (3, 128)
    assert torch.equal(reconstruction, torch.zeros_like(x))  # the output layer starts at zero
    assert ae.head.fc1.in_features == 64 * 4 * 4  # the unpooled 4 x 4 map of layer4, flattened
    ae.eval()
    code = ae.probe_forward(x)  # what extraction reads: the linear code before its ReLU
    torch.testing.assert_close(ae.head(pre_pool(ae.backbone, x)[0]), code.relu())
    assert ResNetDecoder(16, 64, width=0.125)(torch.randn(2, 16)).shape == (2, 3, 64, 64)
    # Views of another size are resized to image_size, in training and extraction alike.
    assert ae.probe_forward(torch.randn(2, 3, 40, 40)).shape == (2, 128)
    view = torch.randn(2, 3, 40, 40)
    loss = ae.train().loss([view])["invariance"].item()  # the blank output's error at 32 px
    assert loss == pytest.approx(ae.resize(view).pow(2).mean().item() / 2, rel=1e-5)


# ----------------------------------------------------------------------------- colourisation


def test_ab_bins_are_zhangs_313_and_hold_every_srgb_colour():
    bins = col.ab_bins()
    assert bins.shape == (313, 2)
    digest = hashlib.sha256(bins.numpy().astype(np.int64).tobytes()).hexdigest()
    assert digest == PTS_IN_HULL_SHA256
    # The gamut's ab projection is that of the RGB cube's surface (a vertical line through the
    # solid leaves it through the surface): sample the six faces densely.
    steps = np.linspace(0, 1, 61)
    u, v = (a.ravel() for a in np.meshgrid(steps, steps))
    faces = [np.stack(np.roll([u, v, np.full_like(u, side)], k, axis=0), 1)
             for k in range(3) for side in (0.0, 1.0)]  # fmt: skip
    ab = torch.from_numpy(rgb2lab(np.concatenate(faces)[:, None, :])[:, 0, 1:]).float()
    nearest = col.nearest_bin(ab, bins)
    # The nearest grid point of every sRGB colour is a bin: it is the nearest bin.
    torch.testing.assert_close(bins[nearest], torch.round(ab / 10) * 10)


def test_nearest_bin_lookup_matches_exhaustive_search():
    ab = torch.rand(4000, 2, generator=torch.Generator().manual_seed(0)) * 280 - 140
    bins = col.ab_bins()
    brute = ((ab[:, None] - bins[None]) ** 2).sum(2).argmin(1)  # includes out-of-gamut points
    assert torch.equal(col.nearest_bin(ab, bins), brute)


def test_lab_ab_units_match_scikit_image():
    images = uint8_images(4, size=8)
    net = make_net("colorization")
    lab = Augmenter({"preset": "none"}, "cpu", colour_space="lab").plain(images)
    want = np.moveaxis(rgb2lab(images.numpy()), -1, 1)[:, 1:]
    np.testing.assert_allclose(net.ab_units(lab[:, 1:]).numpy(), want, atol=2e-3)


def soft_encode_by_hand(point, bins, k, sigma):
    d2 = [(point[0] - a) ** 2 + (point[1] - b) ** 2 for a, b in bins]
    order = sorted(range(len(bins)), key=lambda q: d2[q])[:k]
    kernel = [math.exp(-d2[q] / (2 * sigma**2)) for q in order]
    return order, [w / sum(kernel) for w in kernel]


def test_soft_encoding_is_the_gaussian_weighted_k_nearest_bins():
    bins = col.ab_bins()
    points = torch.tensor([[3.3, -7.9], [41.7, 12.6], [-88.2, 55.9]])  # no tied distances
    index, weights = col.soft_encode(points, bins, 5, 5.0)
    for i, point in enumerate(points.tolist()):
        order, want = soft_encode_by_hand(point, bins.tolist(), 5, 5.0)
        assert index[i].tolist() == order
        assert weights[i].tolist() == pytest.approx(want, rel=1e-5)


def test_prior_smoothing_and_rebalancing_weights_match_eqs_3_and_4():
    bins = col.ab_bins()
    counts = torch.zeros(313, dtype=torch.long)
    counts[[0, 5, 6, 100, 200]] = torch.tensor([5, 1, 3, 10, 2])
    prior = col.smoothed_prior(counts, bins, 5.0)
    centres, p = bins.tolist(), [c / 21 for c in counts.tolist()]
    smooth = [
        sum(math.exp(-((a - a2) ** 2 + (b - b2) ** 2) / 50) * p[r]
            for r, (a2, b2) in enumerate(centres) if p[r])
        for a, b in centres
    ]  # fmt: skip
    assert prior.tolist() == pytest.approx([s / sum(smooth) for s in smooth], rel=1e-9)
    weights = col.rebalancing_weights(prior, 0.5)
    seen = [q for q in range(313) if prior[q] > 0]
    raw = {q: 1 / (0.5 * prior[q].item() + 0.5 / len(seen)) for q in seen}
    scale = sum(prior[q].item() * raw[q] for q in seen)
    assert [weights[q].item() for q in seen] == pytest.approx([raw[q] / scale for q in seen])
    assert (prior * weights).sum().item() == pytest.approx(1.0)  # E_p~[w] = 1
    rare, common = int(prior[seen].argmin()), int(prior.argmax())
    assert weights[rare] > weights[common]
    flat = col.rebalancing_weights(prior, 1.0)  # lambda = 1: no rebalancing
    assert flat[seen].tolist() == pytest.approx([1.0] * len(seen))


def test_classification_loss_matches_eq_2_with_rebalancing_and_grey_mask():
    bins = col.ab_bins()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 313, generator=g, dtype=torch.float64)
    ab = torch.tensor([[12.0, -33.0], [-61.0, 70.0], [0.4, 0.2]])
    weights = torch.rand(313, generator=g) + 0.5
    mask = torch.tensor([True, True, False])
    out = col.classification_loss(logits, ab, bins, weights, 5, 5.0, mask)
    total = 0.0
    for i in range(3):
        order, soft = soft_encode_by_hand(ab[i].tolist(), bins.tolist(), 5, 5.0)
        log_p = log_softmax(logits[i].tolist())
        term = -sum(z * log_p[q] for q, z in zip(order, soft, strict=True))
        total += term * weights[order[0]].item() * mask[i].item()
    assert_parts(out, total / 3, 0.0, rel=1e-5)


def test_regression_loss_and_grey_mask():
    prediction = torch.tensor([[0.1, 0.2], [0.5, -0.5], [1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0], [0.25, 0.5], [0.0, 0.0]])
    out = col.regression_loss(prediction, target, torch.tensor([True, True, False]))
    want = ((0.1**2 + 0.2**2) / 2 + (0.25**2 + 1.0**2) / 2) / 3
    assert_parts(out, want, 0.0)
    maps = torch.zeros(3, 2, 2, 2)
    maps[1, 0, 1, 1], maps[2, 1, 0, 0] = 5.0, -5.01  # NonGrayMask: some |ab| > 5
    assert col.colourful(maps, 5.0).tolist() == [False, False, True]


def lab_context(images: torch.Tensor, batch_size: int = 5) -> EpochContext:
    plain = Augmenter({"preset": "none"}, "cpu", colour_space="lab").plain
    labels = torch.zeros(len(images), dtype=torch.long)
    return EpochContext(1, images, labels, plain, torch.Generator(), None, batch_size)


def test_colour_prior_is_counted_once_and_kept_in_the_resume_state():
    net = make_net("colorization")
    images = uint8_images(12, size=8)
    ctx = lab_context(images)
    with pytest.raises(RuntimeError, match="colour prior is not counted"):
        net.loss([Augmenter(None, "cpu", colour_space="lab")(uint8_images(2), ctx.generator)])
    net.before_epoch(ctx)
    lab = ctx.plain(images)
    ab = net.ab_units(lab[:, 1:]).permute(0, 2, 3, 1).reshape(-1, 2)
    counts = torch.bincount(col.nearest_bin(ab, net.bins), minlength=313)
    torch.testing.assert_close(net.ab_prior, col.smoothed_prior(counts, net.bins, 5.0))
    torch.testing.assert_close(
        net.class_weights, col.rebalancing_weights(net.ab_prior, 0.5).float()
    )
    before = net.ab_prior.clone()
    net.before_epoch(lab_context(uint8_images(12, size=8, seed=5)))  # counted once per run
    assert torch.equal(net.ab_prior, before)
    assert not any(k.startswith(("ab_prior", "class_weights", "bins")) for k in net.state_dict())
    resumed = make_net("colorization", seed=1)
    resumed.load_training_state(net.training_state())
    assert resumed.has_prior and torch.equal(resumed.class_weights, net.class_weights)
    fresh = make_net("colorization")
    fresh.load_training_state(make_net("colorization").training_state())  # epoch 0: none yet
    assert not fresh.has_prior
    with pytest.raises(ValueError, match="ab_prior must be"):
        fresh.load_training_state({"ab_prior": torch.zeros(3)})


def capture(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    acts = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: acts.update({name: out}))
        for name, module in net.layer_modules().items()
    ]
    try:
        with torch.no_grad():
            net.probe_forward(x)
    finally:
        for hook in hooks:
            hook.remove()
    return acts


def test_colorization_probe_forward_reads_only_the_l_channel():
    net = make_net("colorization").eval()
    x = Augmenter(None, "cpu", colour_space="lab").plain(uint8_images(4))
    other = x.clone()
    other[:, 1:] = torch.randn_like(other[:, 1:])
    first, second = capture(net, x), capture(net, other)
    assert list(first) == layer_names(ARCH, "colorization")
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert first["head_fc1"].shape[-2:] == (4, 4)  # a map: extraction pools it


# ------------------------------------------------------------------------- relative position


def test_relative_position_loss_matches_the_formula():
    logits = torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    positions = torch.tensor([0, 7, 3, 3])
    want = sum(-log_softmax(logits[i].tolist())[positions[i]] for i in range(4)) / 4
    assert_parts(relative_position_loss(logits, positions), want, 0.0)


@pytest.mark.parametrize("grid", [(96, 22, 10, 3), (400, 96, 48, 7)], ids=["32px", "224px"])
def test_grid_pairs_are_neighbours_apart_and_never_overlap(grid):
    """Doersch et al.'s pairs: the centre and one of its 8 neighbours of a 3 x 3 grid, each
    jittered by up to `jitter`; no pair shares a pixel and both lie inside the image."""
    size, patch, gap, jitter = grid
    torch.manual_seed(0)
    centre, neighbour, labels = sample_pairs(3000, size, patch, gap, jitter)
    for corner in (centre, neighbour):
        assert corner.min() >= 0 and (corner + patch).max() <= size
    cells = torch.tensor(NEIGHBOURS)[labels] - torch.tensor(CENTRE)
    offset = neighbour - centre
    # Along each axis the second patch is one pitch (patch + gap) away, +- 2 jitter, or level.
    expected = cells * (patch + gap)
    assert ((offset - expected).abs() <= 2 * jitter).all()
    apart = (offset.abs() - patch).max(dim=1).values  # gap along the separating axis
    assert apart.min() >= gap - 2 * jitter >= 0
    assert torch.bincount(labels, minlength=8).min() > 3000 / 8 * 0.8  # uniform over the 8
    jitters = offset - expected
    assert jitters.min() == -2 * jitter and jitters.max() == 2 * jitter
    # Drawn from the global RNG only: the same seed gives the same pairs.
    torch.manual_seed(0)
    again = sample_pairs(3000, size, patch, gap, jitter)
    assert all(torch.equal(a, b) for a, b in zip(again, (centre, neighbour, labels), strict=True))


def test_crop_takes_each_images_own_square():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    corners = torch.tensor([[1, 2], [6, 0]])
    out = crop(x, corners, 4)
    assert torch.equal(out[0], x[0, :, 1:5, 2:6]) and torch.equal(out[1], x[1, :, 6:10, 0:4])


# ------------------------------------------------------------------------------------- CPC


def test_cpc_loss_matches_infonce_written_out():
    g = torch.Generator().manual_seed(3)
    targets = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
    predictions = {k: torch.randn(2, 3 - k, 2, 3, generator=g, dtype=torch.float64) for k in (1, 2)}
    flat = [targets[b, r, c].tolist() for b in range(2) for r in range(3) for c in range(2)]
    invariance = regularisation = 0.0
    for k, prediction in predictions.items():
        terms = [
            (dot(prediction[b, r, c].tolist(), targets[b, r + k, c].tolist()),
             math.log(sum(math.exp(dot(prediction[b, r, c].tolist(), z)) for z in flat)))
            for b in range(2) for r in range(3 - k) for c in range(2)
        ]  # fmt: skip
        invariance -= sum(t[0] for t in terms) / len(terms)
        regularisation += sum(t[1] for t in terms) / len(terms)
    assert_parts(cpc_loss(predictions, targets), invariance, regularisation, rel=1e-9)
    with pytest.raises(ValueError, match="prediction for offset 1"):
        cpc_loss({1: predictions[2]}, targets)


def test_crop_grid_is_the_overlapping_grid():
    x = torch.randn(2, 3, 32, 32)
    crops = crop_grid(x, 8, 4)
    assert crops.shape == (2, 7, 7, 3, 8, 8)
    assert torch.equal(crops[1, 2, 5], x[1, :, 8:16, 20:28])


@pytest.mark.parametrize("context", [PixelCNNContext(6, 5, 3), ColumnGRUContext(6, 5)])
def test_context_of_a_row_depends_on_rows_above_only(context):
    latents = torch.randn(2, 6, 5, 4, requires_grad=True)
    out = context.eval()(latents)
    for r in range(5):
        (grad,) = torch.autograd.grad(out[:, :, r].sum(), latents, retain_graph=True)
        assert torch.count_nonzero(grad[:, :, r + 1 :]) == 0, r
        assert torch.count_nonzero(grad[:, :, r]) > 0, r


def test_no_cpc_prediction_sees_the_pixels_of_its_target_crop():
    """Perturbing every image row below the crops of context row r changes no prediction
    made from rows <= r; the target crop of such a prediction (rows r + k, k >= min_offset)
    lies wholly in that region (min_offset x stride >= crop size)."""
    cpc = make_net("cpc").eval()
    p = cpc.params
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = cpc.predict(cpc.latents(x))
        for r in range(7 - p["min_offset"]):
            first_unseen = r * p["crop_stride"] + p["crop_size"]
            for k in cpc.offsets:
                assert (r + k) * p["crop_stride"] >= first_unseen  # the target's first row
            changed = x.clone()
            changed[:, :, first_unseen:] = torch.randn_like(changed[:, :, first_unseen:])
            after = cpc.predict(cpc.latents(changed))
            for k in cpc.offsets:
                torch.testing.assert_close(after[k][:, : r + 1], before[k][:, : r + 1])
                if r + 1 < after[k].shape[1]:
                    assert not torch.allclose(after[k][:, r + 1 :], before[k][:, r + 1 :])


# ------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize("method", PRETEXT)
def test_extraction_reads_every_layer_once(method):
    net = make_net(method).eval()
    layers = layer_names(ARCH, method)
    assert list(net.layer_modules()) == layers
    acts = activations(net, uint8_images(6).numpy(), layers, "mean", batch_size=4)
    for name in layers:
        assert acts[name].shape[0] == 6 and np.isfinite(acts[name]).all(), name
    summary = next(line for line in describe().splitlines() if line.startswith(f"{method}: "))
    assert re.search(r"\(.*\d{4}\)", summary), summary  # the method's paper is cited


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("method", "params", "needle"),
    [
        ("autoencoder", {"image_size": 36}, "'image_size' of 'autoencoder' must be a multiple"),
        ("autoencoder", {"l1_weight": -1.0}, "'l1_weight' of 'autoencoder' must be >= 0"),
        ("colorization", {"objective": "l1"}, "must be one of classification, regression"),
        ("colorization", {"neighbours": 400}, "'neighbours' of 'colorization' must be <= 313"),
        ("colorization", {"prior_mix": 1.5}, "'prior_mix' of 'colorization' must be in [0, 1]"),
        ("relative_position", {"image_size": 64}, "'image_size' of 'relative_position' = 64: "
         "the 3 x 3 grid does not fit"),
        ("relative_position", {"gap": 4}, "'gap' of 'relative_position' must be >= 2 x jitter"),
        ("relative_position", {"jitter": -1}, "'jitter' of 'relative_position' must be >= 0"),
        ("cpc", {"crop_stride": 5}, "'crop_stride' of 'cpc' = 5: crops of 8 px every 5 px do "
         "not tile image_size 32"),
        ("cpc", {"crop_size": 40}, "'crop_size' of 'cpc' must be <= image_size 32"),
        ("cpc", {"max_offset": 7}, "'max_offset' of 'cpc' = 7: the 7 x 7 grid"),
        ("cpc", {"min_offset": 1}, "'min_offset' of 'cpc' = 1: the crop 1 rows below shares"),
        ("cpc", {"min_offset": 4}, "'min_offset' of 'cpc' must be <= max_offset 3"),
        ("cpc", {"context": "lstm"}, "'context' of 'cpc' must be one of pixelcnn, gru"),
        ("cpc", {"emb_scale": 0}, "'emb_scale' of 'cpc' must be > 0"),
    ],
)  # fmt: skip
def test_bad_params_are_rejected_naming_the_key(method, params, needle):
    with pytest.raises(ValueError) as err:
        METHODS.get(method).resolve(params)
    assert needle in str(err.value)


def test_config_check_rejects_them_before_any_job(monkeypatch):
    """What `snakemake -n` runs (study.checked): the grid that does not fit, colourisation of
    grey data, each naming the method's params key."""
    cfg = put(base(), "methods", ["relative_position", "colorization"])
    put(cfg, "method_settings.relative_position", {"params": {}})
    put(cfg, "method_settings.colorization", {"params": {}})
    study.checked(json.loads(json.dumps(cfg)))
    bad = put(json.loads(json.dumps(cfg)), "method_settings.relative_position.params",
              {"patch_size": 30})  # fmt: skip
    with pytest.raises(
        sslconfig.ConfigError, match=r"method_settings\.relative_position\.params.*does not fit"
    ):
        study.checked(bad)
    original = study.dataset
    monkeypatch.setattr(study, "dataset", lambda c: dataclasses.replace(original(c), colour=False))
    with pytest.raises(
        sslconfig.ConfigError, match=r"method_settings\.colorization\.params.*colour"
    ):
        study.checked(json.loads(json.dumps(cfg)))


# -------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    """60 synthetic images of 20 known fine classes: 7 batches of 8 per epoch."""
    root = tmp_path_factory.mktemp("pretext")
    data, split = root / "synthetic.npz", root / "split.json"
    prepare_dataset("synthetic", root, data, train_per_class=3, test_per_class=1)
    write_split(data, split, n_known=4, n_novel=1, seed=0)
    return data, split


@pytest.fixture(scope="module")
def ramps(tmp_path_factory):
    """60 images whose red channel brightens downwards and green rightwards (blue is noise):
    where a patch lies is readable from its colour. The synthetic textures are periodic and
    placed at random, so on them the relative position of two patches is mostly unknowable
    (the loss stays near ln 8 in a short run); this planted case tests that the method learns
    what can be learnt."""
    root = tmp_path_factory.mktemp("ramps")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    amplitude, offset = rng.uniform(0.4, 0.8, (60, 1, 1)), rng.uniform(0.0, 0.2, (60, 1, 1))
    rgb = np.stack([offset + amplitude * y, offset + amplitude * x, rng.random((60, 32, 32))], -1)
    images = (rgb * 255).round().astype(np.uint8)
    io.save_npz(root / "ramps.npz", {"train_images": images, "train_fine": np.arange(60) % 4})
    io.write_json(root / "split.json", {"seed": 0, "known_fine": [0, 1, 2, 3], "novel_fine": []})
    return root / "ramps.npz", root / "split.json"


def make_run(method: str) -> dict:
    train = {
        **defaults()["train"],
        "epochs": 3,
        "batch_size": 8,
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-6},
        "schedule": {"name": "constant"},
        "device": "cpu",
        "deterministic": True,
        "threads": 1,
    }
    augment = {"preset": "seed000", "crop_scale": [0.25, 1.0]}
    if method == "colorization":  # Zhang et al.'s crops and flips: jitter changes the targets
        augment = {"preset": "none", "crop_p": 1.0, "flip_p": 0.5, "crop_scale": [0.25, 1.0]}
    if method == "relative_position":  # the planted ramps: flips and jitter would hide them
        augment = {"preset": "none", "crop_p": 1.0, "flip_p": 0.0, "crop_scale": [0.25, 1.0]}
    return {
        "method": method,
        "seed": 0,
        "method_params": SMALL[method],
        "architecture": ARCH,
        "train": train,
        "augment": augment,
    }


def objective(checkpoint, run: dict, images: torch.Tensor) -> float:
    """The method's loss on every training image, un-augmented, with the same random draws
    (pairs of relative position) for every checkpoint: free of the augmentation noise that
    moves a 21-step run's per-epoch means."""
    net, _ = load_network(checkpoint, torch.device("cpu"))
    plain = Augmenter(run["augment"], "cpu", colour_space=net.colour_space).plain
    labels = torch.zeros(len(images), dtype=torch.long)
    ctx = EpochContext(1, images, labels, plain, torch.Generator(), None, 16)
    with torch.no_grad(), torch.random.fork_rng():
        net.train().before_epoch(ctx)  # colourisation counts its colour prior
        torch.manual_seed(0)
        return net.loss([plain(images)])["loss"].item()


@pytest.mark.parametrize("method", PRETEXT)
def test_training_lowers_the_loss_and_a_killed_run_resumes_bit_identical(
    method, tiny_synthetic, ramps, tmp_path
):
    data = ramps if method == "relative_position" else tiny_synthetic
    run = make_run(method)
    train_run(run, *data, tmp_path / "straight", lambda _line: None)
    images = torch.from_numpy(load_training_set(*data).images)
    checkpoints = tmp_path / "straight" / "checkpoints"
    first, last = (objective(checkpoints / f"epoch_{e:03d}.pt", run, images) for e in (0, 3))
    assert last < first, (first, last)

    def crash(epoch, step):
        if (epoch, step) == (2, 1):
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected crash"):
        train_run(run, *data, tmp_path / "resumed", lambda _line: None, _on_step=crash)
    lines = []
    train_run(run, *data, tmp_path / "resumed", lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    for epoch in range(4):
        name = f"checkpoints/epoch_{epoch:03d}.pt"
        a = io.torch_load(tmp_path / "straight" / name)["state_dict"]
        b = io.torch_load(tmp_path / "resumed" / name)["state_dict"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (epoch, key)
    states = [io.torch_load(tmp_path / d / ".state" / "resume.pt")["method_state"]
              for d in ("straight", "resumed")]  # fmt: skip
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    if method == "colorization":
        assert states[0]["ab_prior"].sum().item() == pytest.approx(1.0)
    columns = ["epoch", "loss", "invariance", "regularisation", "lr"]
    logs = [pd.read_csv(tmp_path / d / "train_log.tsv", sep="\t")[columns]
            for d in ("straight", "resumed")]  # fmt: skip
    pd.testing.assert_frame_equal(*logs)
