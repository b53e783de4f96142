"""Training engine: outputs, resume after a crash or SIGKILL (bit-identical), fingerprints,
extension, NaN handling, data selection; LARS and the schedules against hand computations."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ssltrace.config import defaults
from ssltrace.io import save_npz, torch_load, write_json
from ssltrace.methods import build_method
from ssltrace.methods.simclr import SimCLR
from ssltrace.models import build_backbone
from ssltrace.training import build_optimizer, build_schedule, engine, train_run
from ssltrace.training.data import load_training_set

KNOWN = [4, 0, 2, 5]  # deliberately unsorted: labels are positions in this list


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """72 noise images, fine class i % 6; the 48 of the known classes make 3 batches of 16."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    save_npz(
        root / "tiny.npz",
        {
            "train_images": rng.integers(0, 256, (72, 32, 32, 3), dtype=np.uint8),
            "train_fine": np.arange(72, dtype=np.int64) % 6,
            "test_images": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
            "test_fine": np.arange(6, dtype=np.int64),
        },
    )
    write_json(root / "split.json", {"seed": 0, "known_fine": KNOWN, "novel_fine": [1, 3]})
    return root / "tiny.npz", root / "split.json"


def make_run(method="simclr", epochs=3, **overrides):
    train = {
        **defaults()["train"],
        "epochs": epochs,
        "batch_size": 16,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "constant", "warmup_epochs": 1},
        "device": "cpu",
        "deterministic": True,
        "threads": 1,  # tiny convolutions on a shared 2-core machine
    }
    train.update(overrides.pop("train", {}))
    run = {
        "method": method,
        "seed": 0,
        "method_params": {},
        "architecture": {"name": "resnet18", "width": 0.125},
        "train": train,
        "augment": {"preset": "seed000"},
    }
    run.update(overrides)
    return run


class Log(list):
    def __call__(self, line):
        self.append(line)

    def text(self):
        return "\n".join(self)


def weights(out_dir, epoch):
    return torch_load(out_dir / "checkpoints" / f"epoch_{epoch:03d}.pt")["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted 3-epoch SimCLR run (constant lr after 1 warm-up epoch)."""
    out = tmp_path_factory.mktemp("reference")
    log = Log()
    train_run(make_run(), *data, out, log)
    return out, log


def test_outputs_checkpoints_links_and_log(reference):
    out, log = reference
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    for name in names:  # hard links into .state: a deleted output can be relinked
        assert os.path.samefile(out / "checkpoints" / name, out / ".state" / "epochs" / name)
    ckpt = torch_load(out / "checkpoints" / "epoch_002.pt")
    assert ckpt["format"] == "ssltrace-checkpoint/1"
    assert (ckpt["method"], ckpt["seed"], ckpt["epoch"], ckpt["n_classes"]) == ("simclr", 0, 2, 4)
    assert ckpt["architecture"] == {"name": "resnet18", "width": 0.125}
    assert ckpt["method_params"] == {"temperature": 0.5, "proj_hidden_dim": None, "proj_dim": 128}
    # Epoch 0 is the initialisation: the method built under the run's seed.
    torch.manual_seed(0)
    fresh = build_method("simclr", build_backbone("resnet18", width=0.125), {}, 4)
    assert_same_weights(weights(out, 0), fresh.state_dict())
    fresh.load_state_dict(ckpt["state_dict"])  # a checkpoint rebuilds the method
    assert not torch.equal(weights(out, 0)["head.fc1.weight"], weights(out, 1)["head.fc1.weight"])
    table = pd.read_csv(out / "train_log.tsv", sep="\t")
    assert list(table.columns) == [
        "epoch",
        "loss",
        "invariance",
        "regularisation",
        "lr",
        "seconds",
        "images_per_s",
    ]
    assert table["epoch"].tolist() == [1, 2, 3]
    # SimCLR logs seed 004's regulariser: the log-sum-exp over cross-view negatives only, a
    # subset of the terms of the optimised loss's uniformity term, so it is smaller.
    uniformity = table["loss"] - table["invariance"]
    assert np.isfinite(table[["loss", "invariance", "regularisation"]]).all().all()
    assert (table["regularisation"] < uniformity).all()
    assert table["lr"].tolist() == pytest.approx([0.05] * 3)
    assert (table["images_per_s"] > 0).all()
    progress = [line for line in log if "/3: loss" in line]
    assert len(progress) == 3 and "images/s" in progress[0] and "ETA" in progress[0]


def test_crash_mid_run_then_resume_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"

    def crash(epoch, step):
        if (epoch, step) == (2, 1):
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError, match="injected crash"):
        train_run(make_run(), *data, out, Log(), _on_step=crash)
    assert not (out / "checkpoints" / "epoch_002.pt").exists()
    # Snakemake deletes a failed job's declared outputs; the rerun restores them.
    for path in (out / "checkpoints").iterdir():
        path.unlink()
    (out / "train_log.tsv").unlink()
    log = Log()
    train_run(make_run(), *data, out, log)
    assert "resuming after epoch 1" in log.text()
    for epoch in range(4):
        assert_same_weights(weights(out, epoch), weights(reference[0], epoch))
    columns = ["epoch", "loss", "invariance", "regularisation", "lr"]
    resumed = pd.read_csv(out / "train_log.tsv", sep="\t")[columns]
    straight = pd.read_csv(reference[0] / "train_log.tsv", sep="\t")[columns]
    pd.testing.assert_frame_equal(resumed, straight)


@pytest.mark.parametrize(
    "method, train",
    [
        # queue, momentum encoder with a cosine momentum schedule, LARS, cosine lr + warm-up
        ("moco_v2", {"optimizer": {"name": "lars", "lr": 0.3, "weight_decay": 1e-4},
                     "schedule": {"name": "cosine", "warmup_epochs": 1}}),
        # labels, Adam, step schedule
        ("supervised", {"optimizer": {"name": "adam", "lr": 1e-3},
                        "schedule": {"name": "step", "milestones": [2], "gamma": 0.5}}),
    ],
)  # fmt: skip
def test_resume_is_bit_identical_for_stateful_methods(data, tmp_path, method, train):
    params = {"queue_size": 64} if method == "moco_v2" else {}
    run = make_run(method, epochs=3, train=train, method_params=params)
    train_run(run, *data, tmp_path / "straight", Log())

    def crash(epoch, step):
        if (epoch, step) == (3, 0):
            raise RuntimeError("injected crash")

    with pytest.raises(RuntimeError):
        train_run(run, *data, tmp_path / "resumed", Log(), _on_step=crash)
    train_run(run, *data, tmp_path / "resumed", Log())
    final = weights(tmp_path / "resumed", 3)
    assert_same_weights(final, weights(tmp_path / "straight", 3))
    if method == "moco_v2":
        assert int(final["queue_ptr"]) == (3 * 3 * 32) % 64  # 3 epochs x 3 steps x 2 views


SIGKILL_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from ssltrace.training import train_run

    def pause(epoch, step):
        if (epoch, step) == (2, 1):
            print("MIDEPOCH", flush=True)
            time.sleep(300)

    run = json.loads(sys.argv[1])
    train_run(run, Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), _on_step=pause)
    """
)


def test_sigkill_mid_epoch_then_rerun_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    run = make_run()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", SIGKILL_SCRIPT, json.dumps(run), *map(str, data), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "MIDEPOCH" in line:
                break
        assert "MIDEPOCH" in "".join(seen), "".join(seen)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    assert (out / "checkpoints" / "epoch_001.pt").exists()
    assert not (out / "checkpoints" / "epoch_002.pt").exists()
    log = Log()
    train_run(run, *data, out, log)
    assert "resuming after epoch 1" in log.text()
    assert_same_weights(weights(out, 3), weights(reference[0], 3))


def test_extending_and_shrinking_epochs_with_a_constant_schedule(data, reference, tmp_path):
    out = tmp_path / "run"
    train_run(make_run(epochs=1), *data, out, Log())
    first = (out / "checkpoints" / "epoch_001.pt").stat()
    log = Log()
    train_run(make_run(epochs=3), *data, out, log)
    assert "resuming after epoch 1" in log.text() and "discarding" not in log.text()
    assert (out / "checkpoints" / "epoch_001.pt").stat().st_ino == first.st_ino  # not retrained
    assert_same_weights(weights(out, 3), weights(reference[0], 3))
    # Fewer epochs: the finished ones are kept, only 0..1 are exposed.
    train_run(make_run(epochs=1), *data, out, Log())
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch_000.pt",
        "epoch_001.pt",
    ]
    assert pd.read_csv(out / "train_log.tsv", sep="\t")["epoch"].tolist() == [1]
    log = Log()
    train_run(make_run(epochs=3), *data, out, log)
    assert "already trained" in log.text()
    assert_same_weights(weights(out, 3), weights(reference[0], 3))


def test_extending_a_plain_cosine_schedule_retrains(data, tmp_path):
    out = tmp_path / "run"
    cosine = {"schedule": {"name": "cosine"}}
    train_run(make_run(epochs=1, train=cosine), *data, out, Log())
    before = weights(out, 1)
    log = Log()
    train_run(make_run(epochs=2, train=cosine), *data, out, log)
    assert "discarding saved training state (train.epochs: 1 -> 2)" in log.text()
    assert (out / "checkpoints" / "epoch_002.pt").exists()
    # Epoch 1 was retrained under the longer cosine, so its learning rates differ.
    assert not torch.equal(before["head.fc1.weight"], weights(out, 1)["head.fc1.weight"])


def test_changed_settings_discard_the_state(data, reference, tmp_path):
    out = tmp_path / "run"
    train_run(make_run(epochs=1), *data, out, Log())
    log = Log()
    train_run(make_run(epochs=1, method_params={"temperature": 0.2}), *data, out, log)
    assert "method_params.temperature: 0.5 -> 0.2" in log.text()
    assert "resuming" not in log.text()


def test_untrained_writes_only_the_initialisation(data, tmp_path):
    out = tmp_path / "run"
    log = Log()
    train_run(make_run("untrained", epochs=5), *data, out, log)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch_000.pt"]
    assert pd.read_csv(out / "train_log.tsv", sep="\t").empty
    ckpt = torch_load(out / "checkpoints" / "epoch_000.pt")
    assert ckpt["method"] == "untrained" and "head.fc1.weight" in ckpt["state_dict"]
    log = Log()
    train_run(make_run("untrained", epochs=7), *data, out, log)
    assert "already trained" in log.text()


def test_nan_loss_stops_the_run_naming_method_seed_epoch(data, tmp_path, monkeypatch):
    original = SimCLR.loss

    def nan_loss(self, views, labels=None, index=None):
        out = original(self, views, labels, index)
        return {**out, "loss": out["loss"] * float("nan")}

    monkeypatch.setattr(SimCLR, "loss", nan_loss)
    with pytest.raises(FloatingPointError, match=r"simclr seed 3: .* in epoch 1 \(by step 3\)"):
        train_run(make_run(epochs=2, seed=3), *data, tmp_path / "run", Log())
    assert not (tmp_path / "run" / "checkpoints" / "epoch_001.pt").exists()
    # The running loss is read every CHECK_EVERY steps: a diverging run stops within them.
    monkeypatch.setattr(engine, "CHECK_EVERY", 1)
    with pytest.raises(FloatingPointError, match=r"in epoch 1 \(by step 1\)"):
        train_run(make_run(epochs=2, seed=3), *data, tmp_path / "run2", Log())


def test_training_set_is_the_known_classes_relabelled(data):
    dataset, split = data
    subset = load_training_set(dataset, split)
    with np.load(dataset) as raw:
        keep = np.isin(raw["train_fine"], KNOWN)
        np.testing.assert_array_equal(subset.images, raw["train_images"][keep])
        fine = raw["train_fine"][keep]
    assert subset.n_classes == 4 and len(subset.images) == 48
    assert [KNOWN[label] for label in subset.labels] == fine.tolist()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"name": "x"}, "run has unknown key"),
        ({"train": {"epochs": 2, "lr": 0.1}}, "unknown key.*'train.lr'"),
        ({"train": {"epochs": 2, "optimizer": {"name": "rmsprop", "lr": 0.1}}}, "sgd"),
        ({"train": {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1, "eta": 1}}}, "'eta'"),
        ({"train": {"epochs": 2, "schedule": {"name": "cosine", "horizon": 3}}}, "'horizon'"),
        ({"train": {"epochs": 2, "batch_size": 64}}, "exceeds the 48 training images"),
        ({"train": {"epochs": 2, "amp": "fp16"}}, "needs a CUDA device"),
        ({"method": "simclrr"}, "unknown method 'simclrr'"),
        ({"method_params": {"temp": 1.0}}, "unknown method_params key 'temp'"),
        ({"augment": {"preset": "nope"}}, "unknown augment preset"),
        ({"architecture": {"name": "resnet18", "depth": 3}}, "has no parameter 'depth'"),
    ],
)
def test_bad_runs_fail_before_training(data, tmp_path, change, match):
    run = make_run(epochs=2)
    for key, value in change.items():
        run[key] = {**run[key], **value} if key == "train" else value
    with pytest.raises((ValueError, KeyError), match=match):
        train_run(run, *data, tmp_path / "run", Log())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_incomplete_run_is_refused_naming_the_missing_keys(data, tmp_path):
    run = make_run(epochs=2)
    del run["augment"], run["train"]["amp"]
    with pytest.raises(ValueError, match="run lacks 'augment', 'train.amp'"):
        train_run(run, *data, tmp_path / "run", Log())


# --- LARS and schedules ----------------------------------------------------------------


def test_lars_matches_a_hand_computed_step():
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
        layer.bias.fill_(1.0)
    opt = build_optimizer(
        layer, {"name": "lars", "lr": 2.0, "momentum": 0.9, "weight_decay": 0.1, "eta": 0.001}
    )

    def step(weight_grad, bias_grad):
        layer.weight.grad = torch.tensor([weight_grad])
        layer.bias.grad = torch.tensor([bias_grad])
        opt.step()

    # Step 1: g' = g + 0.1 w = (0.9, 1.2), ||g'|| = 1.5, trust = 0.001 * 5 / 1.5 = 1/300;
    # mu = g' / 300 = (0.003, 0.004); w = w - 2 mu = (2.994, 3.992).
    # The bias gets neither weight decay nor adaptation: mu = 0.5, b = 1 - 2 * 0.5 = 0.
    step([0.6, 0.8], 0.5)
    torch.testing.assert_close(layer.weight, torch.tensor([[2.994, 3.992]]))
    torch.testing.assert_close(layer.bias, torch.tensor([0.0]))
    # Step 2 with zero gradient: g' = 0.1 w = (0.2994, 0.3992), ||g'|| = 0.499, ||w|| = 4.99,
    # trust = 0.001 * 4.99 / 0.499 = 0.01; mu = 0.9 (0.003, 0.004) + (0.002994, 0.003992).
    step([0.0, 0.0], 0.0)
    mu = [0.9 * 0.003 + 0.002994, 0.9 * 0.004 + 0.003992]
    expected = torch.tensor([[2.994 - 2 * mu[0], 3.992 - 2 * mu[1]]])
    torch.testing.assert_close(layer.weight, expected)
    torch.testing.assert_close(layer.bias, torch.tensor([0.0 - 2 * 0.9 * 0.5]))


def test_cosine_schedule_with_warmup_values():
    s = build_schedule(
        {"name": "cosine", "warmup_epochs": 2, "final_lr_fraction": 0.1}, 0.1, 10, 10
    )
    assert s(0) == pytest.approx(0.1 / 20)  # warm-up step s: lr (s + 1) / W
    assert s(9) == pytest.approx(0.1 * 10 / 20)
    assert s(19) == pytest.approx(0.1)
    assert s(20) == pytest.approx(0.1)  # cosine starts at the base lr
    assert s(60) == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 0.5)) / 2)
    assert s(100) == pytest.approx(0.01)
    assert s.depends_on_epochs


def test_epoch_independent_schedules():
    step = build_schedule({"name": "step", "milestones": [3, 6], "gamma": 0.1}, 0.1, 10, 10)
    assert [step(29), step(30), step(59), step(60)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    for epochs in (10, 20):
        fixed = build_schedule({"name": "cosine_fixed", "horizon": 5}, 0.2, epochs, 10)
        assert fixed(25) == pytest.approx(0.2 * (1 + math.cos(math.pi * 0.5)) / 2)
        assert fixed(50) == pytest.approx(0.0) and fixed(150) == pytest.approx(0.0)
        assert not fixed.depends_on_epochs
    constant = build_schedule({"name": "constant", "warmup_epochs": 1}, 0.3, 10, 4)
    assert [constant(0), constant(3), constant(4), constant(39)] == pytest.approx(
        [0.075, 0.3, 0.3, 0.3]
    )


def test_schedule_and_optimizer_errors():
    with pytest.raises(ValueError, match="train.schedule.name must be one of"):
        build_schedule({"name": "linear"}, 0.1, 10, 10)
    with pytest.raises(ValueError, match="horizon must be an int > warmup_epochs"):
        build_schedule({"name": "cosine_fixed"}, 0.1, 10, 10)
    with pytest.raises(ValueError, match="train.optimizer.lr must be a number > 0"):
        build_optimizer(nn.Linear(2, 2), {"name": "sgd", "lr": 0})
