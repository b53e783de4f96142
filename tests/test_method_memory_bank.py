"""Instance Recognition and Local Aggregation: their losses against the published formulas
written out as loops, the memory bank's init and running-average update, LA's neighbour sets
on a toy embedding, parameter errors, bit-identical resume, and a short training run each.

The training runs share one module-scoped synthetic set: the 10 fine classes of two coarse
ones (rings, clouds), 20 training images each, rendered with `synthetic.render_fine_class`,
the function behind `prepare_dataset("synthetic", ...)` (the same images it writes for these
classes; rendering the other 90 classes would cost more CPU than training). Settings as in
tests/test_validation.py (Adam 3e-3, crops >= 25 %), batch 16, a constant lr, 10 epochs:
about 5 CPU seconds per method.

The short runs assert that the loss falls, not that fine-class NCC rises: at this budget
NCC (backbone features, 100 test images per class, margin two binomial SE over epoch 0) rose
beyond the margin for IR on 1 of 3 seeds (0.149 -> 0.176, margin 0.023), for LA on none
(best 0.123 -> 0.141), and for SimCLR at equal CPU (5 epochs) on 2 of 3. IR learns slowly:
an image's positive is its bank entry, refreshed once per epoch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from ssltrace.config import defaults
from ssltrace.data.synthetic import render_fine_class
from ssltrace.io import save_npz, torch_load, write_json
from ssltrace.losses.instance import (
    LA_EPSILON,
    background_neighbours,
    close_in_background,
    close_neighbours,
    instance_nce_loss,
    instance_softmax_loss,
    local_aggregation_loss,
    nce_normaliser,
)
from ssltrace.methods import METHODS, EpochContext, build_method
from ssltrace.methods.local_aggregation import LocalAggregation, neighbourhood_sizes
from ssltrace.methods.memory_bank import MemoryBank, random_entries, running_average
from ssltrace.models import build_backbone
from ssltrace.training import train_run

IR, LA = "instance_recognition", "local_aggregation"
KNOWN = [20, 21, 22, 23, 24, 95, 96, 97, 98, 99]  # rings and clouds, 5 fine classes each
EPOCHS = 10
# At 200 images the scaled defaults are 2 clusters and the whole bank as background, where
# C_i covers most of B_i: clusters of ~10 images and a background of ~6 clusters instead.
LA_PARAMS = {"ir_epochs": 3, "kmeans_k": 20, "background_k": 64}
NCE_PARAMS = {"nce_negatives": 16}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- losses


def toy(seed=0, batch=3, n=5, dim=4):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    bank = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return v, bank


def dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def test_softmax_loss_is_wu_et_al_non_parametric_softmax():
    v, bank = toy()
    index, t = torch.tensor([4, 0, 2]), 0.07
    losses, pulls = [], []
    for b in range(len(v)):
        # P(i|v) = exp(V_i . v / t) / sum_j exp(V_j . v / t)   (Wu et al. Eq. 2)
        scores = [math.exp(dot(bank[j], v[b]) / t) for j in range(len(bank))]
        losses.append(-math.log(scores[index[b]] / sum(scores)))
        pulls.append(-dot(bank[index[b]], v[b]) / t)
    out = instance_softmax_loss(3 * v, bank, index, t)  # v is normalised by the loss
    assert out["loss"].item() == pytest.approx(np.mean(losses), rel=1e-5)
    assert out["invariance"].item() == pytest.approx(np.mean(pulls), rel=1e-5)
    total = (out["invariance"] + out["regularisation"]).item()
    assert total == pytest.approx(out["loss"].item(), rel=1e-6)


def test_nce_loss_is_wu_et_al_nce_with_a_fixed_normaliser():
    v, bank = toy(n=6)
    index, t, z = torch.tensor([1, 5, 0]), 0.5, 7.3
    noise = torch.tensor([[0, 2], [3, 3], [5, 4]])
    n, m = len(bank), noise.shape[1]
    losses = []
    for b in range(len(v)):
        # h(i, v) = P(i|v) / (P(i|v) + m P_n), P(i|v) = exp(V_i . v / t) / Z, P_n = 1/n
        def h(j, b=b):
            p = math.exp(dot(bank[j], v[b]) / t) / z
            return p / (p + m / n)

        # J = -log h(i, v) - sum_k log(1 - h(j_k, v))
        losses.append(-math.log(h(index[b])) - sum(math.log(1 - h(j)) for j in noise[b]))
    out = instance_nce_loss(v, bank, index, noise, z, t)
    assert out["loss"].item() == pytest.approx(np.mean(losses), rel=1e-5)
    pulls = [-dot(bank[index[b]], v[b]) / t for b in range(len(v))]
    assert out["invariance"].item() == pytest.approx(np.mean(pulls), rel=1e-5)
    total = (out["invariance"] + out["regularisation"]).item()
    assert total == pytest.approx(out["loss"].item(), rel=1e-5)


def test_nce_normaliser_is_the_monte_carlo_estimate_of_the_partition():
    v, bank = toy(n=6)
    index, t = torch.tensor([1, 5, 0]), 0.5
    noise = torch.tensor([[0, 2], [3, 3], [5, 4]])
    # Z = n E_j[exp(V_j . v / t)] over each row's own entry and its noise (Wu et al. §3.2)
    terms = [
        math.exp(dot(bank[j], v[b]) / t)
        for b in range(len(v))
        for j in [int(index[b]), *noise[b].tolist()]
    ]
    expected = len(bank) * np.mean(terms)
    assert nce_normaliser(v, bank, index, noise, t).item() == pytest.approx(expected, rel=1e-5)


def test_nce_reduces_to_its_closed_form_when_the_model_is_the_noise():
    # All similarities equal: P(j|v) = 1/n = P_n exactly, Z is the exact partition function,
    # h = 1 / (1 + m), and J = log(1 + m) + m log((1 + m) / m).
    n, m = 8, 3
    bank = F.normalize(torch.ones(n, 4), dim=1)
    v = F.normalize(torch.ones(2, 4), dim=1)
    index, noise = torch.tensor([0, 7]), torch.tensor([[1, 2, 3], [4, 4, 0]])
    z = nce_normaliser(v, bank, index, noise, 0.07)
    assert z.item() == pytest.approx(n * math.exp(1 / 0.07), rel=1e-5)
    out = instance_nce_loss(v, bank, index, noise, z, 0.07)
    closed = math.log(1 + m) + m * math.log((1 + m) / m)
    assert out["loss"].item() == pytest.approx(closed, rel=1e-5)


# A toy embedding on the circle: six bank entries at known angles, one query at 0 degrees.
ANGLES = [0, 10, 30, 90, 180, 200]  # degrees; entry 0 is the query image's own entry
LABELS = torch.tensor(
    [
        [0, 0, 1, 1, 2, 2],  # clustering 1: {0, 1}, {2, 3}, {4, 5}
        [0, 1, 0, 1, 0, 1],  # clustering 2: {0, 2, 4}, {1, 3, 5}
    ]
)


def circle():
    rad = torch.tensor(ANGLES, dtype=torch.float64) * math.pi / 180
    bank = torch.stack([rad.cos(), rad.sin()], dim=1).float()
    return bank[:1].clone(), bank, torch.tensor([0])


def test_la_neighbour_sets_on_a_toy_embedding():
    v, bank, index = circle()
    _, background = background_neighbours(v, bank, 3)
    assert set(background[0].tolist()) == {0, 1, 2}  # the three nearest: 0, 10, 30 degrees
    close = close_neighbours(LABELS, index)
    assert set(torch.nonzero(close[0]).flatten().tolist()) == {0, 1, 2, 4}  # union over runs
    both = close_in_background(LABELS, index, background)
    assert {int(j) for j, c in zip(background[0], both[0], strict=True) if c} == {0, 1, 2}
    _, background = background_neighbours(v, bank, 4)  # adds entry 3 (90 degrees): not close
    both = close_in_background(LABELS, index, background)
    assert {int(j) for j, c in zip(background[0], both[0], strict=True) if c} == {0, 1, 2}
    assert close[0, background[0]].tolist() == both[0].tolist()  # C ∩ B, entry by entry


def test_la_loss_is_zhuang_et_al_eq_4():
    v, bank, index = circle()
    t, k = 0.5, 4
    # B = {0, 1, 2, 3}, C ∩ B = {0, 1, 2}: -log P(C ∩ B | v) / P(B | v), Z cancelling
    score = {j: math.exp(dot(v[0], bank[j]) / t) for j in range(len(bank))}
    ratio = (score[0] + score[1] + score[2]) / (score[0] + score[1] + score[2] + score[3])
    out = local_aggregation_loss(v, bank, index, LABELS, k, t)
    assert out["loss"].item() == pytest.approx(-math.log(ratio + LA_EPSILON), rel=1e-5)
    background = math.log(sum(score[j] for j in range(4)))
    assert out["regularisation"].item() == pytest.approx(background, rel=1e-5)
    total = (out["invariance"] + out["regularisation"]).item()
    assert total == pytest.approx(out["loss"].item(), rel=1e-5)


def test_la_loss_is_finite_when_no_background_neighbour_is_close():
    v, bank, _ = circle()
    labels = torch.tensor([[0, 1, 1, 1, 1, 1]])
    out = local_aggregation_loss(-v, bank, torch.tensor([0]), labels, 2, 0.07)  # B = {4, 5}
    assert out["loss"].item() == pytest.approx(-math.log(LA_EPSILON), rel=1e-6)


def test_loss_inputs_are_checked():
    v, bank = toy()
    with pytest.raises(ValueError, match="index must be a LongTensor"):
        instance_softmax_loss(v, bank, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"index must hold positions in \[0, 5\)"):
        instance_softmax_loss(v, bank, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="bank must be"):
        instance_softmax_loss(v, bank[:, :2], torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="normaliser"):
        instance_nce_loss(v, bank, torch.tensor([0, 1, 2]), torch.zeros(3, 2).long(), 0.0)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 5\]"):
        background_neighbours(v, bank, 6)


# ----------------------------------------------------------------------------- memory bank


def test_bank_starts_as_random_unit_vectors():
    entries = random_entries(50, 128, torch.Generator().manual_seed(0))
    assert entries.shape == (50, 128)
    torch.testing.assert_close(entries.norm(dim=1), torch.ones(50))
    # lemniscate's uniform init: no direction preferred, so the mean entry is near 0
    assert entries.mean(dim=0).norm() < 0.3
    again = random_entries(50, 128, torch.Generator().manual_seed(0))
    assert torch.equal(entries, again)


def test_bank_update_is_a_renormalised_running_average():
    bank = MemoryBank(2)
    bank.entries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # momentum 0.5: (e1 + e2) / 2, renormalised to (1, 1) / sqrt(2); the new embedding is
    # normalised first, so its length does not matter.
    bank.update_(torch.tensor([0]), torch.tensor([[0.0, 3.0]]), 0.5)
    root = 1 / math.sqrt(2)
    torch.testing.assert_close(bank.entries[0], torch.tensor([root, root]))
    torch.testing.assert_close(bank.entries[1:], torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    # momentum 0.75: (3 e2 + e1) / 4 -> (1, 3) / sqrt(10)
    bank.update_(torch.tensor([1]), torch.tensor([[2.0, 0.0]]), 0.75)
    torch.testing.assert_close(bank.entries[1], torch.tensor([1.0, 3.0]) / math.sqrt(10))
    same = running_average(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 1.0)
    torch.testing.assert_close(same, torch.tensor([[1.0, 0.0]]))


def make(name, params=None, n_images=12):
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", width=0.125)
    method = build_method(name, backbone, {"proj_dim": 8, **(params or {})}, 3)
    method.setup(n_images)
    return method


def views(batch=4, seed=1):
    return [torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("name", [IR, LA])
def test_bank_moves_after_the_step_towards_the_view_and_stays_out_of_checkpoints(name):
    method = make(name)
    index = torch.tensor([7, 2, 9, 0])
    before = method.memory_bank.entries.clone()
    out = method.loss(views(), None, index)
    assert set(out) == {"loss", "invariance", "regularisation"}
    out["loss"].backward()  # the bank is read by the backward: it must not change before it
    assert method.backbone.stem.conv.weight.grad.abs().sum() > 0
    assert torch.equal(method.memory_bank.entries, before)
    with torch.no_grad():
        v = F.normalize(method.embed_views(views(), method.head), dim=1)
    method.after_step(0.0)
    expected = F.normalize(0.5 * before[index] + 0.5 * v, dim=1)
    torch.testing.assert_close(method.memory_bank.entries[index], expected)
    untouched = [i for i in range(12) if i not in index.tolist()]
    assert torch.equal(method.memory_bank.entries[untouched], before[untouched])
    assert not any("memory_bank" in key or "nce_z" in key for key in method.state_dict())
    assert set(method.training_state()) == {"memory_bank", "nce_z"}


def test_linear_head_is_the_papers_and_is_extracted_as_head_fc1():
    method = make(IR, {"linear_head": True})
    assert list(dict(method.head.named_children())) == ["fc1"]
    assert method.head.fc1.out_features == 8 and "head_fc1" in method.layer_modules()
    out = method.loss(views(), None, torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(out["loss"])
    mlp = make(IR)
    assert mlp.head.fc1.out_features == mlp.backbone.out_dim and mlp.head.fc2.out_features == 8


def test_nce_normaliser_is_estimated_once_and_restored():
    method = make(IR, NCE_PARAMS)
    method.loss(views(), None, torch.tensor([0, 1, 2, 3]))
    z = method.nce_z.item()
    assert z > 0
    method.after_step(0.0)
    method.loss(views(seed=2), None, torch.tensor([4, 5, 6, 7]))
    assert method.nce_z.item() == z
    fresh = make(IR, NCE_PARAMS)
    fresh.load_training_state(method.training_state())
    assert fresh.nce_z.item() == z and fresh._z_known
    assert torch.equal(fresh.memory_bank.entries, method.memory_bank.entries)


def test_la_clusters_the_bank_after_the_ir_epochs_only():
    method = make(LA, {"ir_epochs": 1, "kmeans_k": 3, "n_kmeans": 4, "background_k": 5})

    def ctx(epoch):
        generator = torch.Generator().manual_seed(epoch)
        return EpochContext(
            epoch=epoch,
            images=None,
            labels=None,
            plain=None,
            generator=generator,
            optimizer=None,
            batch_size=4,
        )

    method.before_epoch(ctx(1))
    assert method.cluster_labels is None  # IR epoch: the IR loss
    ir = method.loss(views(), None, torch.tensor([0, 1, 2, 3]))
    method.before_epoch(ctx(2))
    labels = method.cluster_labels
    assert labels.shape == (4, 12) and 0 <= labels.min() and labels.max() < 3
    method.before_epoch(ctx(2))
    assert torch.equal(method.cluster_labels, labels)  # same generator seed, same clusters
    la = method.loss(views(), None, torch.tensor([0, 1, 2, 3]))
    assert la["loss"].item() != ir["loss"].item()
    assert (la["invariance"] + la["regularisation"]).item() == pytest.approx(la["loss"].item())


# ----------------------------------------------------------------------------- parameters


def test_sizes_scale_with_the_training_set():
    params = LocalAggregation.resolve({})
    assert neighbourhood_sizes(params, 1_281_167) == (4096, 10_000)  # the paper's ImageNet
    assert neighbourhood_sizes(params, 25_000) == (4096, 195)  # clusters of ~128 images
    assert neighbourhood_sizes(params, 200) == (200, 2)
    set_ = LocalAggregation.resolve({"background_k": 50, "kmeans_k": 7})
    assert neighbourhood_sizes(set_, 200) == (50, 7)


@pytest.mark.parametrize(
    "name, params, match",
    [
        (LA, {"kmeans_k": 1}, r"'kmeans_k' of 'local_aggregation' must be >= 2"),
        (LA, {"kmeans_k": 0}, "positive int or null"),
        (LA, {"n_kmeans": 0}, "'n_kmeans' of 'local_aggregation' must be > 0"),
        (LA, {"ir_epochs": -1}, "'ir_epochs' of 'local_aggregation' must be >= 0"),
        (IR, {"temperature": 0.0}, "'temperature' of 'instance_recognition' must be > 0"),
        (IR, {"bank_momentum": 1.5}, r"'bank_momentum' .* must be in \[0, 1\]"),
        (IR, {"nce_negatives": -1}, "'nce_negatives' .* must be >= 0"),
    ],
)
def test_bad_parameters_are_refused_naming_the_key(name, params, match):
    with pytest.raises(ValueError, match=match):
        METHODS.get(name).resolve(params)


@pytest.mark.parametrize(
    "name, params, match",
    [
        (LA, {"background_k": 201}, "'background_k' .* at most the number of training images"),
        (LA, {"kmeans_k": 300}, r"'kmeans_k' .* training images \(200\), got 300"),
        (IR, {"nce_negatives": 201}, r"'nce_negatives' .* \(200\), got 201"),
    ],
)
def test_sizes_larger_than_the_training_set_are_refused(name, params, match):
    cls = METHODS.get(name)
    with pytest.raises(ValueError, match=match):
        cls.check_training_set(cls.resolve(params), 200, True)
    cls.check_training_set(cls.resolve({}), 200, True)  # the scaled defaults always fit


def test_misuse_is_reported():
    method = make(IR)
    with pytest.raises(ValueError, match=r"needs the batch's positions .*\(index\)"):
        method.loss(views(), None, None)
    with pytest.raises(ValueError, match="saved memory bank has shape"):
        method.load_training_state({"memory_bank": torch.zeros(5, 8), "nce_z": torch.tensor(1.0)})
    torch.manual_seed(0)
    bare = build_method(IR, build_backbone("resnet18", width=0.125), {}, 3)
    with pytest.raises(RuntimeError, match=r"memory bank is empty; call setup"):
        bare.loss(views(), None, torch.tensor([0, 1, 2, 3]))


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory_bank_data")
    arrays = {
        "train_images": np.concatenate([render_fine_class(c, 20, 0, 0) for c in KNOWN]),
        "train_fine": np.repeat(np.array(KNOWN, dtype=np.int64), 20),
    }
    save_npz(root / "synthetic.npz", arrays)
    write_json(root / "split.json", {"seed": 0, "known_fine": KNOWN, "novel_fine": []})
    return root / "synthetic.npz", root / "split.json"


def make_run(method, params, epochs=EPOCHS):
    train = {
        **defaults()["train"],
        "epochs": epochs,
        "batch_size": 16,
        "optimizer": {"name": "adam", "lr": 3.0e-3, "weight_decay": 1.0e-6},
        "schedule": {"name": "constant", "warmup_epochs": 0},
        "device": "cpu",
        "deterministic": True,
        "compile": False,
        "threads": 1,
    }
    return {
        "method": method,
        "seed": 0,
        "method_params": params,
        "architecture": {"name": "resnet18", "width": 0.125},
        "train": train,
        "augment": {"preset": "seed000", "crop_scale": [0.25, 1.0]},
    }


def quiet(_line):
    pass


def train_recording(method, params, data, out):
    """Train; return every step's loss by epoch (the engine logs only epoch means)."""
    cls, pending, by_epoch = METHODS.get(method), [], {}
    loss = cls.loss

    def recording(self, views, labels=None, index=None):
        result = loss(self, views, labels, index)
        pending.append(result["loss"].item())
        return result

    def on_step(epoch, step):
        by_epoch.setdefault(epoch, []).append(pending.pop())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "loss", recording)
        train_run(make_run(method, params), *data, out, quiet, _on_step=on_step)
    return out, by_epoch


@pytest.fixture(scope="module")
def ir_run(data, tmp_path_factory):
    return train_recording(IR, {}, data, tmp_path_factory.mktemp("ir"))


@pytest.fixture(scope="module")
def la_run(data, tmp_path_factory):
    return train_recording(LA, LA_PARAMS, data, tmp_path_factory.mktemp("la"))


def assert_falls(before, after):
    """Mean step loss falls by more than two standard errors (one batch per step)."""
    before, after = np.asarray(before), np.asarray(after)
    se = math.sqrt(before.var(ddof=1) / len(before) + after.var(ddof=1) / len(after))
    assert after.mean() < before.mean() - 2 * se, (before.mean(), after.mean(), se)


def test_ir_training_lowers_the_loss(ir_run):
    _, by_epoch = ir_run
    # Epoch 1 scores against the random initial bank, epoch 2 against the first embeddings.
    assert_falls(by_epoch[2], by_epoch[EPOCHS])
    logged = log_of(ir_run[0])["loss"].to_numpy()
    means = [np.mean(by_epoch[e]) for e in range(1, EPOCHS + 1)]
    np.testing.assert_allclose(logged, means, rtol=1e-6)  # the log sums in float32


def test_la_training_lowers_its_loss_within_epochs(la_run):
    """The LA loss is measured against clusters redrawn at every epoch, so its epoch means
    need not fall in a short run (here they do not); with the clusters fixed, within each
    epoch, it falls: first against second half of the steps of every LA epoch."""
    _, by_epoch = la_run
    la_epochs = [by_epoch[e] for e in range(LA_PARAMS["ir_epochs"] + 1, EPOCHS + 1)]
    half = len(la_epochs[0]) // 2
    first = np.concatenate([losses[:half] for losses in la_epochs])
    second = np.concatenate([losses[-half:] for losses in la_epochs])
    assert_falls(first, second)


def test_la_starts_as_instance_recognition(ir_run, la_run):
    # The IR epochs of LA are Instance Recognition itself: the same losses, bit for bit.
    ir = log_of(ir_run[0])["loss"].tolist()[: LA_PARAMS["ir_epochs"]]
    la = log_of(la_run[0])["loss"].tolist()[: LA_PARAMS["ir_epochs"]]
    assert la == ir


def log_of(out):
    return pd.read_csv(out / "train_log.tsv", sep="\t")


def crash_at(epoch, step):
    def hook(e, s):
        if (e, s) == (epoch, step):
            raise RuntimeError("injected crash")

    return hook


def assert_same_checkpoints(a, b, epochs):
    for epoch in epochs:
        x = torch_load(a / "checkpoints" / f"epoch_{epoch:03d}.pt")["state_dict"]
        y = torch_load(b / "checkpoints" / f"epoch_{epoch:03d}.pt")["state_dict"]
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), (epoch, key)


def resume_after_crash(run, data, out, epoch):
    with pytest.raises(RuntimeError, match="injected crash"):
        train_run(run, *data, out, quiet, _on_step=crash_at(epoch, 1))
    assert not (out / "checkpoints" / f"epoch_{epoch:03d}.pt").exists()
    lines = []
    train_run(run, *data, out, lines.append)
    assert any(f"resuming after epoch {epoch - 1}" in line for line in lines)


def test_ir_with_nce_resumes_bit_identical(data, tmp_path):
    """NCE: the bank, the normaliser Z (estimated in epoch 1) and the noise draws (global
    RNG) must all come back for epoch 2 to repeat."""
    run = make_run(IR, NCE_PARAMS, epochs=2)
    train_run(run, *data, tmp_path / "straight", quiet)
    resume_after_crash(run, data, tmp_path / "resumed", 2)
    assert_same_checkpoints(tmp_path / "straight", tmp_path / "resumed", range(3))
    columns = ["epoch", "loss", "invariance", "regularisation"]
    resumed = log_of(tmp_path / "resumed")[columns]
    pd.testing.assert_frame_equal(resumed, log_of(tmp_path / "straight")[columns])


def test_la_resumes_bit_identical_in_its_first_clustered_epoch(data, la_run, tmp_path):
    """Killed in the first LA epoch: the clusters are recomputed from the restored bank with
    the epoch's generator, and the run goes on as the uninterrupted one did."""
    first_la = LA_PARAMS["ir_epochs"] + 1
    # A constant lr: the run's length does not enter its training, so a shorter run is a
    # prefix of the uninterrupted 10-epoch one.
    resume_after_crash(make_run(LA, LA_PARAMS, epochs=first_la), data, tmp_path, first_la)
    assert_same_checkpoints(la_run[0], tmp_path, range(first_la + 1))
