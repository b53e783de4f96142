"""Seed 003's semi-supervised learning: the labelled subset, its config checks, and the
Mean Teacher, Local Label Propagation and few-label losses on hand-computed cases."""

import copy
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssltrace import config as sslconfig
from ssltrace import study
from ssltrace.losses.label_propagation import (
    local_density,
    local_label_propagation_loss,
    propagate_labels,
)
from ssltrace.losses.mean_teacher import mean_teacher_loss, sigmoid_rampup
from ssltrace.methods import EpochContext
from ssltrace.methods.few_label import labelled_order
from ssltrace.network import build_network
from ssltrace.training import train_run
from ssltrace.training.labels import UNLABELLED, labelled_mask, masked_labels, n_labelled
from tests.test_config import base
from tests.test_training import KNOWN, Log, assert_same_weights, make_run, weights

ARCH = {"name": "resnet18", "width": 0.125}


def class_labels(sizes, seed=0):
    """Labels with `sizes[c]` images of class c, shuffled (dataset order is not by class)."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(seed).permutation(labels)


# --- the labelled subset -------------------------------------------------------------------


def test_fraction_is_stratified_by_class():
    labels = class_labels([100, 60, 40])
    mask = labelled_mask(labels, {"fraction": 0.1, "seed": 0})
    assert np.bincount(labels[mask]).tolist() == [10, 6, 4]


def test_per_class_and_at_least_one_per_class():
    labels = class_labels([30, 20, 5])
    assert np.bincount(labels[labelled_mask(labels, {"per_class": 4})]).tolist() == [4, 4, 4]
    # 1 % of 5 rounds to 0: every class keeps one label
    tiny = labelled_mask(labels, {"fraction": 0.01})
    assert np.bincount(labels[tiny]).tolist() == [1, 1, 1]
    assert n_labelled({"fraction": 0.01}, np.array([30, 20, 5])) == 3


def test_subset_is_deterministic_and_depends_only_on_labels_and_setting():
    labels = class_labels([50, 50])
    a = labelled_mask(labels, {"fraction": 0.2, "seed": 3})
    assert np.array_equal(a, labelled_mask(labels.copy(), {"fraction": 0.2, "seed": 3}))
    other = labelled_mask(labels, {"fraction": 0.2, "seed": 4})
    assert not np.array_equal(a, other) and other.sum() == a.sum()


def test_fractions_are_nested():
    labels = class_labels([80, 80, 80])
    masks = [labelled_mask(labels, {"fraction": f}) for f in (0.03, 0.1, 0.5, 1.0)]
    for small, large in zip(masks, masks[1:], strict=False):
        assert np.all(large[small])  # every label of the smaller subset is kept
    assert masks[-1].all()


def test_masked_labels_hide_the_unlabelled():
    labels = class_labels([10, 10])
    masked = masked_labels(labels, {"per_class": 2})
    assert (masked == UNLABELLED).sum() == 16
    kept = masked != UNLABELLED
    assert np.array_equal(masked[kept], labels[kept])
    assert np.array_equal(masked_labels(labels, None), labels)


@pytest.mark.parametrize(
    "setting, needle",
    [
        ({"fraction": 0.0}, r"'fraction' must be a number in \(0, 1\]"),
        ({"fraction": 1.5}, r"'fraction' must be a number in \(0, 1\]"),
        ({"per_class": 17}, "more labelled images per class than the 16"),
        ({"fraction": 0.1, "per_class": 2}, "exactly one of .*got fraction and per_class"),
        ({"seed": 1}, "exactly one of .*got neither"),
    ],
)
def test_bad_label_settings_fail_the_config_check_naming_the_key(setting, needle):
    cfg = base()  # the ci preset: 16 training images per class
    cfg["methods"] = ["mt"]
    cfg["method_settings"]["mt"] = {"method": "mean_teacher", "labels": setting}
    with pytest.raises(sslconfig.ConfigError, match="method_settings.mt.labels") as err:
        study.checked(cfg)
    assert re.search(needle, str(err.value))


def test_labels_on_a_method_without_a_subset_and_few_label_without_one_are_refused():
    cfg = base()
    cfg["methods"] = ["simclr"]
    cfg["method_settings"]["simclr"] = {"labels": {"fraction": 0.5}}
    with pytest.raises(sslconfig.ConfigError, match="method_settings.simclr.labels.*does not"):
        study.checked(cfg)
    cfg = base()
    cfg["methods"] = ["few_label"]
    del cfg["method_settings"]["few_label"]["labels"]
    with pytest.raises(sslconfig.ConfigError, match="method_settings.few_label.labels"):
        study.checked(cfg)


def test_label_fraction_variants_are_runs_with_their_own_settings():
    cfg = base()
    cfg["methods"] = ["mt_f10", "mt_f50", "simclr"]
    for name, f in (("mt_f10", 0.1), ("mt_f50", 0.5)):
        cfg["method_settings"][name] = {"method": "mean_teacher", "labels": {"fraction": f}}
    cfg = study.checked(cfg)
    a, b = study.run_settings(cfg, "mt_f10", 0), study.run_settings(cfg, "mt_f50", 0)
    assert a["labels"] == {"fraction": 0.1, "seed": 0} and b["labels"]["fraction"] == 0.5
    assert "labels" not in study.run_settings(cfg, "simclr", 0)  # others' settings unchanged
    n_classes = study.dataset(cfg).fine_per_coarse * cfg["split"]["n_known"]
    assert study.n_labels(cfg, "mt_f10") == n_classes * 2  # round(0.1 x 16) per class
    # A changed fraction changes only that run's settings (the pretrain rule's params).
    changed = copy.deepcopy(cfg)
    changed["method_settings"]["mt_f10"]["labels"]["fraction"] = 0.2
    for name in ("mt_f50", "simclr"):
        assert study.run_settings(changed, name, 0) == study.run_settings(cfg, name, 0)
    assert study.run_settings(changed, "mt_f10", 0) != a
    assert study.n_labels(cfg, "simclr") is None


# --- Mean Teacher ----------------------------------------------------------------------------


def test_mean_teacher_loss_by_hand():
    student = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [1.0, 1.0]])
    labels = torch.tensor([0, -1, 1])
    out = mean_teacher_loss(student, teacher, labels, weight=10.0)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce2 = math.log(2)
    p0 = math.exp(2) / (math.exp(2) + 1)
    squares = 2 * (p0 - 0.5) ** 2 + 2 * (0.5 - 0.25) ** 2 + 0.0  # rows 0, 1, 2
    # The classification sums the labelled rows' cross-entropy and divides by the whole
    # batch (3), as the authors' code; the consistency averages over rows and classes (6).
    assert out["regularisation"].item() == pytest.approx((ce0 + ce2) / 3, rel=1e-6)
    assert out["invariance"].item() == pytest.approx(10.0 * squares / 6, rel=1e-6)
    assert out["loss"].item() == pytest.approx((ce0 + ce2) / 3 + 10 * squares / 6, rel=1e-6)


def test_mean_teacher_without_labels_in_the_batch_and_teacher_without_gradient():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    out = mean_teacher_loss(student, teacher, torch.full((4,), -1), 1.0)
    assert out["regularisation"].item() == 0.0
    out["loss"].backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(2.5, 5) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(7, 5) == 1.0 and sigmoid_rampup(0, 0) == 1.0


def context(images, labels, epoch=1, batch=4):
    return EpochContext(
        epoch=epoch,
        images=images,
        labels=labels,
        plain=lambda x: x,
        generator=torch.Generator().manual_seed(0),
        optimizer=None,
        batch_size=batch,
    )


def test_mean_teacher_ramps_weight_and_switches_ema_decay_after_rampup():
    torch.manual_seed(0)
    mt = build_network(ARCH, "mean_teacher", {"rampup_epochs": 2, "ema_warmup": False}, 3)
    images = torch.zeros(8, 32, 32, 3, dtype=torch.uint8)
    mt.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=2))  # 2 steps/epoch
    assert mt.position == 1.0
    assert mt.consistency_weight() == pytest.approx(100 * math.exp(-5 * 0.25))
    assert mt.momentum(0.0) == 0.99
    mt.after_step(0.0)
    assert mt.position == 1.5
    mt.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=3))
    assert mt.consistency_weight() == 100 and mt.momentum(0.0) == 0.999
    teacher = mt.teacher_head.fc1.weight.clone()
    with torch.no_grad():
        mt.head.fc1.weight.add_(1.0)
    mt.after_step(0.0)  # teacher <- 0.999 teacher + 0.001 student
    expected = 0.999 * teacher + 0.001 * mt.head.fc1.weight
    assert torch.allclose(mt.teacher_head.fc1.weight, expected, atol=1e-6)


def test_mean_teacher_teacher_is_the_true_average_until_the_ema_takes_over():
    """The authors' PyTorch update_ema_variables: decay min(1 - 1/(t + 1), decay) at the t-th
    step, so after t steps the teacher is the mean of the initial and the t students' weights."""
    torch.manual_seed(0)
    mt = build_network(ARCH, "mean_teacher", {"rampup_epochs": 2}, 3)
    images = torch.zeros(8, 32, 32, 3, dtype=torch.uint8)
    mt.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=1))  # 2 steps/epoch
    seen = [mt.head.fc1.weight.clone()]  # the teacher starts as a copy of the student
    for epoch, shift in ((1, 1.0), (1, -3.0), (2, 0.5)):  # steps 1, 2 (epoch 1), 3 (epoch 2)
        if epoch == 2:
            mt.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=2))
        with torch.no_grad():
            mt.head.fc1.weight.add_(shift)  # an optimiser step
        seen.append(mt.head.fc1.weight.clone())
        mt.after_step(0.0)
        mean = torch.stack(seen).mean(dim=0)  # (init + t students) / (t + 1)
        assert torch.allclose(mt.teacher_head.fc1.weight, mean, atol=1e-5)
    assert mt.momentum(0.0) == pytest.approx(1 - 1 / 5)  # the 4th step: 4 / 5 < 0.99
    mt.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=60))
    assert mt.momentum(0.0) == pytest.approx(1 - 1 / 120)  # step 119: still below 0.999
    mt.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=1000))
    assert mt.momentum(0.0) == 0.999  # step 1999: 1 - 1/2000 > 0.999, the EMA's decay wins
    off = build_network(ARCH, "mean_teacher", {"rampup_epochs": 2, "ema_warmup": False}, 3)
    off.before_epoch(context(images, torch.zeros(8, dtype=torch.long), epoch=1))
    assert off.momentum(0.0) == 0.99  # the paper's plain EMA from the first step


# --- few-label control -----------------------------------------------------------------------


def test_few_label_epoch_visits_only_labelled_images_each_before_repeating():
    labels = torch.tensor([-1, 0, -1, 1, -1, -1, 2, -1, -1, -1])
    order = labelled_order(labels, torch.Generator().manual_seed(0))
    assert len(order) == 10 and set(order.tolist()) == {1, 3, 6}
    for start in (0, 3, 6):  # each round is a permutation of the labelled images
        assert sorted(order[start : start + 3].tolist()) == [1, 3, 6]


def test_few_label_refuses_unlabelled_rows():
    torch.manual_seed(0)
    net = build_network(ARCH, "few_label", {}, 3)
    with pytest.raises(ValueError, match="labelled images only"):
        net.loss([torch.randn(2, 3, 32, 32)], torch.tensor([0, -1]), torch.arange(2))


# --- Local Label Propagation -----------------------------------------------------------------


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def test_local_density_by_hand():
    bank = unit([1, 0], [0.8, 0.6], [0, 1], [-1, 0])
    # entry 0: nearest others 1 (0.8) and 2 (0); entry 2: nearest 1 (0.6) and 0 (0)
    rho = local_density(bank, torch.tensor([0, 2]), k=2)
    assert rho.tolist() == pytest.approx([0.8, 0.6])


def test_propagation_weights_by_distance_and_density_by_hand():
    bank = unit([1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [-1, 0.1])
    labels = torch.tensor([0, -1, 1, -1, -1])
    t = 0.5
    pseudo, conf = propagate_labels(bank, labels, 2, propagation_k=2, density_k=1, temperature=t)
    # densities (k = 1): rho_0 = V0.V1 = 0.8, rho_2 = V2.V3 = 0.8
    rho = {0: 0.8, 2: 0.8}
    for i in (1, 3, 4):
        w = {j: math.exp(float(bank[i] @ bank[j]) / t) / rho[j] for j in (0, 2)}
        best = max(w, key=w.get)
        assert pseudo[i].item() == labels[best].item()
        assert conf[i].item() == pytest.approx(w[best] / sum(w.values()), rel=1e-9)
    assert pseudo[[0, 2]].tolist() == [0, 1] and conf[[0, 2]].tolist() == [1.0, 1.0]


def test_density_lowers_a_labelled_neighbours_vote():
    # Unlabelled u is slightly closer to labelled a (class 0), but a sits in a dense crowd:
    # a's vote is divided by its larger density and b (class 1) wins.
    a, b, u = [1.0, 0.0], [0.0, 1.0], [0.72, 0.69]
    crowd = [[1.0, 0.02], [1.0, -0.02], [0.99, 0.03]]
    bank = unit(a, b, u, *crowd, [-0.5, 1.0], [-1.0, 0.5], [0.3, -1.0])
    labels = torch.tensor([0, 1, -1, -1, -1, -1, -1, -1, -1])
    pseudo, _ = propagate_labels(bank, labels, 2, propagation_k=2, density_k=3, temperature=1.0)
    assert pseudo[2].item() == 1
    no_density, _ = propagate_labels(bank, labels, 2, 2, density_k=1, temperature=0.01)
    assert no_density[2].item() == 0  # at a low temperature distance dominates


def test_llp_loss_by_hand():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(6, 3), dim=1)
    v = F.normalize(torch.randn(2, 3), dim=1)
    logits = torch.randn(2, 2)
    index = torch.tensor([0, 3])
    pseudo = torch.tensor([0, 1, 0, 1, 1, 0])
    conf = torch.tensor([1.0, 0.5, 0.7, 0.4, 1.0, 1.0])
    t, k = 0.5, 4
    out = local_label_propagation_loss(v, logits, bank, index, pseudo, conf, k, t)
    inv = reg = 0.0
    for row, i in enumerate(index.tolist()):
        s = (v[row] @ bank.T / t).tolist()
        background = sorted(range(6), key=lambda j: -s[j])[:k]
        total = sum(math.exp(s[j]) for j in background)
        close = sum(math.exp(s[j]) for j in background if pseudo[j] == pseudo[i])
        ce = -F.log_softmax(logits[row], 0)[pseudo[i]].item()
        c = conf[i].item()
        inv += c * (-math.log(close / total + 1e-7) - math.log(total) + ce)
        reg += c * math.log(total)
    assert out["invariance"].item() == pytest.approx(inv / 2, rel=1e-5)
    assert out["regularisation"].item() == pytest.approx(reg / 2, rel=1e-5)
    assert out["loss"].item() == pytest.approx((inv + reg) / 2, rel=1e-5)


def test_llp_recomputes_pseudo_labels_after_the_ir_epochs():
    torch.manual_seed(0)
    params = {"proj_dim": 8, "ir_epochs": 1, "propagation_k": 2, "density_k": 2}
    llp = build_network(ARCH, "local_label_propagation", params, 2)
    llp.setup(6)
    labels = torch.tensor([0, -1, 1, -1, -1, -1])
    images = torch.zeros(6, 32, 32, 3, dtype=torch.uint8)
    llp.before_epoch(context(images, labels, epoch=1))
    assert llp.pseudo_labels is None  # IR epoch
    llp.before_epoch(context(images, labels, epoch=2))
    assert llp.pseudo_labels[[0, 2]].tolist() == [0, 1]
    assert ((llp.confidence > 0) & (llp.confidence <= 1)).all()
    expected, _ = propagate_labels(llp.memory_bank.entries, labels, 2, 2, 2, 0.07)
    assert torch.equal(llp.pseudo_labels, expected)
    out = llp.loss([torch.randn(3, 3, 32, 32)], labels[:3], torch.arange(3))
    out["loss"].backward()
    assert llp.classifier.weight.grad.abs().sum() > 0


# --- the training engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """test_training's set: 72 noise images, fine class i % 6, 48 of the known classes."""
    from ssltrace.io import save_npz, write_json

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (72, 32, 32, 3), dtype=np.uint8)
    fine = np.arange(72, dtype=np.int64) % 6
    save_npz(root / "tiny.npz", {"train_images": images, "train_fine": fine})
    write_json(root / "split.json", {"seed": 0, "known_fine": KNOWN, "novel_fine": [1, 3]})
    return root / "tiny.npz", root / "split.json"


def test_engine_hands_the_method_only_the_subsets_labels(data, tmp_path):
    from ssltrace.training import engine
    from ssltrace.training.data import load_training_set

    training = load_training_set(*data)
    run = make_run("few_label", epochs=1, labels={"per_class": 2, "seed": 0})
    trainer = engine.Trainer(run, training, torch.device("cpu"), tmp_path, Log())
    expected = masked_labels(training.labels, {"per_class": 2, "seed": 0})
    assert np.array_equal(trainer.labels, expected)
    assert (trainer.labels >= 0).sum() == 2 * training.n_classes
    with pytest.raises(ValueError, match="run.labels: method 'simclr'"):
        engine.Trainer(make_run(labels={"fraction": 0.5}), training, torch.device("cpu"),
                       tmp_path, Log())  # fmt: skip


@pytest.mark.parametrize(
    "method, params",
    [
        ("mean_teacher", {"rampup_epochs": 2}),
        ("local_label_propagation", {"proj_dim": 8, "ir_epochs": 1, "density_k": 3}),
        ("few_label", {}),
    ],
)
def test_semi_supervised_runs_resume_bit_identically(data, tmp_path, method, params):
    run = make_run(method, epochs=3, method_params=params, labels={"fraction": 0.25, "seed": 0})
    train_run(run, *data, tmp_path / "straight", Log())

    def crash(epoch, step):
        if (epoch, step) == (3, 0):
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError):
        train_run(run, *data, tmp_path / "resumed", Log(), _on_step=crash)
    train_run(run, *data, tmp_path / "resumed", Log())
    assert_same_weights(weights(tmp_path / "resumed", 3), weights(tmp_path / "straight", 3))
    # another fraction is another run: its saved state is not resumed
    other = {**run, "labels": {"fraction": 0.5, "seed": 0}}
    log = Log()
    train_run(other, *data, tmp_path / "straight", log)
    assert "discarding saved training state" in log.text()


# --- seed 003 Fig. 4e-f ----------------------------------------------------------------------


def test_label_sweep_draws_seed_means_at_each_runs_number_of_labels(tmp_path, monkeypatch):
    import pandas as pd

    from ssltrace import io
    from ssltrace.figures import FIGURES, style

    figures = []
    monkeypatch.setattr(style, "save", lambda fig, *a: figures.append(fig) or [])
    runs = {"mt_f10": 0.1, "mt_f50": 0.5, "fl_f10": 0.1}
    method_settings = {
        name: {"method": "mean_teacher" if name.startswith("mt") else "few_label",
               "labels": {"fraction": f}}
        for name, f in runs.items()
    }  # fmt: skip
    rows = []
    accuracy = {"mt_f10": (0.4, 0.5), "mt_f50": (0.7, 0.8), "fl_f10": (0.2, 0.3),
                "supervised": (0.9, 0.9)}  # fmt: skip
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            for layer in ("layer4", "pool", "head_fc1"):
                rows.append((method, seed, 2, layer, "fine", "linear_svm", value))
                rows.append((method, seed, 0, layer, "fine", "linear_svm", 0.05))
    table = pd.DataFrame(rows, columns=["method", "seed", "epoch", "layer", "probe", "metric",
                                        "value"])  # fmt: skip
    io.save_table(tmp_path / "geometry.tsv", table)
    settings = {
        "formats": ["png"], "dpi": 50, "layer_order": ["layer4", "pool", "head_fc1"],
        "method_settings": method_settings, "n_known": 4,
        "dataset": {"name": "synthetic", "options": {"train_per_class": 20}},
    }  # fmt: skip
    FIGURES.get("label_sweep")({"table": tmp_path / "geometry.tsv"}, tmp_path / "f", settings)
    (ax,) = figures[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    n_classes = 20  # 4 coarse x 5 fine; 20 images each: 2 and 10 labels per class
    mt = lines["mean_teacher"]
    assert list(mt.get_xdata()) == [2 * n_classes, 10 * n_classes]
    assert list(mt.get_ydata()) == pytest.approx([0.45, 0.75])  # pool, final epoch, seed mean
    fl = next(c for c in ax.containers if c.get_label() == "few_label")  # one point + SD bar
    assert fl.lines[0].get_xdata()[0] == 2 * n_classes
    assert fl.lines[0].get_ydata()[0] == pytest.approx(0.25)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == pytest.approx([0.9])
    consistency = table.assign(metric="behaviour_consistency", probe="human", value=table.value / 2)
    io.save_table(tmp_path / "behaviour.tsv", consistency[consistency.layer == "pool"])
    inputs = {"table": tmp_path / "geometry.tsv", "behaviour": tmp_path / "behaviour.tsv"}
    FIGURES.get("label_sweep")(inputs, tmp_path / "g", settings)
    left, right = figures[1].axes  # Fig. 4e beside Fig. 4f
    mt = {line.get_label(): line for line in left.get_lines()}["mean_teacher"]
    assert list(mt.get_ydata()) == pytest.approx([0.225, 0.375])  # the behaviour table's values
    assert "consistency" in left.get_ylabel() and "accuracy" in right.get_ylabel()


def test_two_stream_batches_hold_a_fixed_share_of_labelled_images():
    from ssltrace.methods.few_label import labelled_batches

    labels = torch.full((100,), -1)
    labels[[3, 17, 42, 77, 90]] = torch.tensor([0, 1, 2, 0, 1])
    order = labelled_batches(labels, 16, 0.25, torch.Generator().manual_seed(0))
    assert len(order) == 100
    for step in range(100 // 16):
        batch = order[step * 16 : (step + 1) * 16]
        assert (labels[batch] >= 0).sum() == 4  # round(0.25 x 16)
    steps_part = order[: (100 // 16) * 16]
    unlabelled = steps_part[labels[steps_part] < 0]
    assert len(set(unlabelled.tolist())) == len(unlabelled)  # 72 of 95: no repeat in one pass
    everything = labelled_batches(torch.arange(10), 4, 0.25, torch.Generator().manual_seed(0))
    assert sorted(everything.tolist()) == list(range(10))  # all labelled: a plain permutation
