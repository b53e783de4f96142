"""Training images streamed from a folder dataset, and the in-memory set's batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssltrace import io
from ssltrace.data import prepare_dataset
from ssltrace.data.folder import decode_square
from ssltrace.training.data import TrainingSet, load_training_set
from ssltrace.training.streaming import FolderImages, FolderTrainingSet
from tests.folder_study import make_image_folder


@pytest.fixture(scope="module")
def folder_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    root = make_image_folder(tmp / "img", train_per_class=5, test_per_class=1)
    prepare_dataset("imagefolder", tmp, tmp / "ds.npz", root=str(root), image_size=32, load_size=40)
    io.write_json(tmp / "split.json", {"seed": 0, "known_fine": [1, 3], "novel_fine": [0, 2]})
    return tmp / "ds.npz", tmp / "split.json", root


def _expected(data: FolderTrainingSet, index, side: int = 40) -> torch.Tensor:
    return torch.stack([decode_square(data.root / data.files[i], side) for i in index.tolist()])


def test_folder_training_set_keeps_known_classes(folder_files):
    dataset, split, root = folder_files
    data = load_training_set(dataset, split)
    assert isinstance(data, FolderTrainingSet) and len(data.images) == 10
    assert data.n_classes == 2 and data.load_size == 40 and data.image_size == 32
    assert all(f.split("/")[1] in ("bike", "dune") for f in data.files)
    np.testing.assert_array_equal(data.labels, np.repeat([0, 1], 5))  # position in known_fine


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_decode_each_full_batch_in_order(folder_files, workers):
    dataset, split, _ = folder_files
    data = load_training_set(dataset, split, loader_workers=workers)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    got = list(data.batches(order, 4, torch.device("cpu")))
    assert len(got) == 2  # the incomplete last batch is dropped, as in memory
    for step, (index, images) in enumerate(got):
        torch.testing.assert_close(index, order[step * 4 : (step + 1) * 4], rtol=0, atol=0)
        assert images.dtype == torch.uint8 and images.shape == (4, 40, 40, 3)
        assert torch.equal(images, _expected(data, index))


def test_device_images_index_like_a_tensor(folder_files):
    dataset, split, _ = folder_files
    data = load_training_set(dataset, split)
    images = data.device_images(torch.device("cpu"))
    assert isinstance(images, FolderImages) and len(images) == 10
    rows = torch.tensor([7, 2])
    assert torch.equal(images[rows], _expected(data, rows, 32))  # at image_size
    assert torch.equal(images[3:5], _expected(data, torch.arange(3, 5), 32))


def test_digest_names_files_sizes_and_labels(folder_files):
    dataset, split, _ = folder_files
    data = load_training_set(dataset, split)
    base = data.digest()
    assert base == load_training_set(dataset, split, loader_workers=3).digest()
    for change in (
        {"labels": data.labels[::-1].copy()},
        {"files": np.roll(data.files, 1)},
        {"file_bytes": data.file_bytes + 1},
        {"load_size": 48},
    ):
        assert FolderTrainingSet(**{**data.__dict__, **change}).digest() != base


def test_in_memory_batches_are_index_gathers():
    images = np.random.default_rng(0).integers(0, 255, (11, 8, 8, 3), dtype=np.uint8)
    data = TrainingSet(images, np.zeros(11, np.int64), (0,))
    order = torch.randperm(11)
    got = list(data.batches(order, 5, torch.device("cpu")))
    assert len(got) == 2
    for step, (index, x) in enumerate(got):
        assert torch.equal(index, order[step * 5 : (step + 1) * 5])
        assert torch.equal(x, torch.from_numpy(images)[index])


def _train(dataset, split, out, method, workers, params=None):
    from ssltrace.training.engine import train_run
    from tests.test_training import make_run

    run = make_run(method, epochs=1, method_params=params or {})
    run["train"].update(batch_size=4, loader_workers=workers)
    run["augment"] = {"preset": "seed000", "size": 32}
    train_run(run, dataset, split, out, log=lambda line: None)
    return torch.load(out / "checkpoints" / "epoch_001.pt", weights_only=True)["state_dict"]


@pytest.mark.parametrize(
    ("method", "params"), [("simclr", {}), ("deepcluster", {"pca_dim": 4, "k": 2})]
)
def test_training_on_a_folder_does_not_depend_on_the_workers(
    folder_files, tmp_path, method, params
):
    dataset, split, _ = folder_files
    a = _train(dataset, split, tmp_path / "a", method, 0, params)
    b = _train(dataset, split, tmp_path / "b", method, 2, params)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_a_loader_worker_ends_when_its_trainer_ends(pidfd):
    """`_exit_with`, which each worker runs in a thread: the worker process ends within
    seconds of its trainer (here a stand-in, a `sleep` SIGKILLed), with a pidfd and with the
    polling kept for systems without one. Workers come from a fork server, so without it they
    outlived a killed trainer for good (tests/test_folder_workflow.py kills a real one)."""
    import signal
    import subprocess
    import sys
    import time

    trainer = subprocess.Popen(["sleep", "60"])
    drop = "" if pidfd else "del os.pidfd_open; "
    code = (
        f"import os, time; {drop}import threading\n"
        "from ssltrace.training.streaming import _exit_with\n"
        f"threading.Thread(target=_exit_with, args=({trainer.pid},), daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(3.0)  # the worker imports and starts its watch
        assert worker.poll() is None  # the trainer lives: the worker too
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        assert worker.wait(timeout=10) == 1
    finally:
        trainer.kill()
        worker.kill()
