"""CIFAR-100 / CIFAR-10 / CIFAR-10H readers on small files written in the real formats.

The archives hold pickles written the way the official Python 2 ones are (byte-string keys
and numpy buffers, `numpy.core.multiarray` globals), so the latin1 decoding path is the one
the real files take.
"""

from __future__ import annotations

import hashlib
import io as _io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from ssltrace import io
from ssltrace.data import (
    DataFormatError,
    DataUnavailableError,
    RemoteFile,
    prepare_dataset,
    prepare_human,
    validate_dataset,
    validate_human,
)
from ssltrace.data.cifar import read_cifar10_test, read_cifar100
from ssltrace.data.cifar10h import read_counts
from ssltrace.data.download import CIFAR10H_COUNTS, md5sum

SHARED_COUNTS = SHARED_DATA / "cifar10h-counts.npy"


# ----------------------------------------------------------------------------- real formats
class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING), as cPickle did for the official files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = _io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, _io.BytesIO(payload))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


FINE_TO_COARSE = np.random.default_rng(0).permutation(np.repeat(np.arange(20), 5))


def cifar100_contents(n_train: int = 100, n_test: int = 20, seed: int = 0) -> dict:
    """Batches with CIFAR-100's keys; train covers every fine class once."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100 if split == "train" else rng.integers(0, 100, n)
        out[split] = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": [int(f) for f in fine],
            b"coarse_labels": [int(FINE_TO_COARSE[f]) for f in fine],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
    out["meta"] = {
        b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
    }
    return out


def write_cifar100(path: Path, contents: dict, dumps=py2_pickle) -> Path:
    members = {f"cifar-100-python/{k}": dumps(v) for k, v in contents.items()}
    return write_tar(path, members)


def write_cifar10(path: Path, n: int = 30, seed: int = 1) -> tuple[Path, dict]:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"t{i}.png".encode() for i in range(n)],
    }
    meta = {
        b"label_names": [name.encode() for name in CIFAR10_NAMES],
        b"num_cases_per_batch": 10000,
        b"num_vis": 3072,
    }
    members = {
        "cifar-10-batches-py/test_batch": py2_pickle(batch),
        "cifar-10-batches-py/batches.meta": py2_pickle(meta),
        "cifar-10-batches-py/readme.html": b"<html></html>",
    }
    return write_tar(path, members), batch


CIFAR10_NAMES = (
    "airplane automobile bird cat deer dog frog horse ship truck".split()  # official order
)


def counts_for(labels, seed: int = 2, agree: float = 0.95) -> np.ndarray:
    """Integer counts of ~50 answers per image, the majority on the given label."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    probs = np.full((n, 10), (1 - agree) / 9)
    probs[np.arange(n), labels] = agree
    return rng.multinomial(50, probs)


# ----------------------------------------------------------------------------- CIFAR-100
def test_cifar100_parses_fine_and_coarse_labels_names_and_hwc_pixels(tmp_path):
    contents = cifar100_contents()
    data = read_cifar100(write_cifar100(tmp_path / "c100.tar.gz", contents))
    validate_dataset(data)
    train = contents["train"]
    assert np.array_equal(data["train_fine"], train[b"fine_labels"])
    assert np.array_equal(data["train_coarse"], train[b"coarse_labels"])
    assert np.array_equal(data["test_fine"], contents["test"][b"fine_labels"])
    assert np.array_equal(data["test_coarse"], contents["test"][b"coarse_labels"])
    assert np.array_equal(data["fine_to_coarse"], FINE_TO_COARSE)
    assert data["fine_names"][7] == "fine07" and data["coarse_names"][19] == "coarse19"
    assert data["fine_names"].dtype.kind == "U"
    # a row is 1024 red, 1024 green, 1024 blue values, each 32x32 row-major
    rows = train[b"data"]
    for i, y, x, c in [(0, 0, 0, 0), (3, 5, 17, 1), (99, 31, 31, 2), (42, 31, 0, 0)]:
        assert data["train_images"][i, y, x, c] == rows[i, c * 1024 + y * 32 + x]
    image = data["train_images"][5]
    assert np.array_equal(image[..., 1].ravel(), rows[5, 1024:2048])


def test_cifar100_also_reads_pickles_with_python3_bytes_keys(tmp_path):
    contents = cifar100_contents(seed=3)
    path = write_cifar100(tmp_path / "c.tar.gz", contents, lambda o: pickle.dumps(o, protocol=4))
    data = read_cifar100(path)
    assert np.array_equal(data["test_fine"], contents["test"][b"fine_labels"])
    assert data["coarse_names"][0] == "coarse00"


def _conflicting_coarse(contents: dict) -> None:
    """A test image of fine class 0 labelled with a different coarse class than in train."""
    contents["test"][b"fine_labels"][0] = 0
    contents["test"][b"coarse_labels"][0] = int(FINE_TO_COARSE[0] + 1) % 20


def _broken(contents: dict, split: str, key: bytes, value) -> dict:
    contents[split][key] = value
    return contents


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda c: c["train"].pop(b"coarse_labels"),
            r"cifar-100-python/train has no 'coarse_labels'",
        ),
        (
            lambda c: _broken(c, "test", b"fine_labels", [100] * 20),
            r"cifar-100-python/test 'fine_labels' has labels 100..100, expected 0..99",
        ),
        (
            lambda c: _broken(c, "train", b"data", np.zeros((100, 3000), np.uint8)),
            r"cifar-100-python/train 'data' rows have 3000 values, expected 3072",
        ),
        (
            lambda c: _broken(c, "train", b"coarse_labels", [0] * 99),
            r"cifar-100-python/train 'coarse_labels' has shape \(99,\), expected \(100,\)",
        ),
        (
            lambda c: c["meta"].__setitem__(b"coarse_label_names", [b"x"] * 19),
            r"cifar-100-python/meta 'coarse_label_names' must list 20 names",
        ),
        (
            _conflicting_coarse,
            r"fine class 0 \(fine00\) has coarse labels",
        ),
        (lambda c: c.pop("meta"), r"member cifar-100-python/meta is missing"),
    ],
)
def test_cifar100_malformed_contents_are_named(tmp_path, mutate, message):
    contents = cifar100_contents()
    mutate(contents)
    with pytest.raises(DataFormatError, match=message):
        read_cifar100(write_cifar100(tmp_path / "bad.tar.gz", contents))


def test_truncated_archive_is_a_clear_error(tmp_path):
    path = write_cifar100(tmp_path / "c.tar.gz", cifar100_contents())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="truncated"):
        read_cifar100(path)


def test_pickles_that_reference_other_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file

    contents = cifar100_contents()
    path = write_cifar100(tmp_path / "c.tar.gz", contents)
    members = {f"cifar-100-python/{k}": py2_pickle(v) for k, v in contents.items() if k != "meta"}
    members["cifar-100-python/meta"] = pickle.dumps(Evil(), protocol=2)
    write_tar(path, members)
    with pytest.raises(DataFormatError, match="refusing to load io.open"):
        read_cifar100(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- CIFAR-10(H)
def test_cifar10_test_batch_in_original_order(tmp_path):
    path, batch = write_cifar10(tmp_path / "c10.tar.gz")
    images, labels, names = read_cifar10_test(path)
    assert np.array_equal(labels, batch[b"labels"]) and labels.dtype == np.int64
    assert names.tolist() == CIFAR10_NAMES
    assert np.array_equal(images.transpose(0, 3, 1, 2).reshape(len(images), -1), batch[b"data"])


def test_counts_reader_checks_shape_and_values(tmp_path):
    good = tmp_path / "counts.npy"
    np.save(good, counts_for(np.arange(30) % 10))
    counts = read_counts(good, 30)
    assert counts.dtype == np.float64 and counts.shape == (30, 10)
    with pytest.raises(DataFormatError, match=r"expected counts of shape \(40, 10\).*\(30, 10\)"):
        read_counts(good, 40)
    bad = tmp_path / "bad.npy"
    np.save(bad, -np.ones((30, 10)))
    with pytest.raises(DataFormatError, match="non-negative whole numbers"):
        read_counts(bad, 30)
    np.save(bad, np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError, match="bad.npy: not a readable .npy"):
        read_counts(bad, 1)


@pytest.mark.skipif(not SHARED_COUNTS.exists(), reason=f"{SHARED_COUNTS} not present")
def test_real_cifar10h_counts_file():
    assert md5sum(SHARED_COUNTS) == CIFAR10H_COUNTS.md5
    counts = read_counts(SHARED_COUNTS, 10000)
    people = counts.sum(1)
    assert 47 <= people.min() and people.max() <= 63 and 50 < people.mean() < 53
    assert counts.max(1).mean() / people.mean() > 0.9  # people mostly agree with each other


# ----------------------------------------------------------------------------- end to end
def _served(server: Path, path: Path) -> RemoteFile:
    """A RemoteFile for `path`, offered at a file:// URL from `server` (the test's 'internet')."""
    return RemoteFile(path.name, (server / path.name).as_uri(), md5(path))


def test_prepare_cifar100_downloads_verifies_and_writes(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    archive = write_cifar100(server / "cifar-100-python.tar.gz", cifar100_contents())
    sources = {archive.name: _served(server, archive)}
    out = tmp_path / "results" / "cifar100.npz"
    prepare_dataset("cifar100", tmp_path / "resources", out, sources=sources)
    assert md5(tmp_path / "resources" / archive.name) == md5(archive)
    data = io.load_npz(out)
    validate_dataset(data)
    assert np.array_equal(data["fine_to_coarse"], FINE_TO_COARSE)
    assert data["train_images"].shape == (100, 32, 32, 3)


def test_prepare_cifar100_with_a_damaged_archive_and_no_network(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    archive = write_cifar100(server / "cifar-100-python.tar.gz", cifar100_contents())
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / archive.name).write_bytes(archive.read_bytes()[:1000])  # truncated copy
    offline = RemoteFile(archive.name, "http://127.0.0.1:9/cifar-100-python.tar.gz", md5(archive))
    with pytest.raises(DataUnavailableError) as err:
        prepare_dataset("cifar100", resources, tmp_path / "o.npz", sources={archive.name: offline})
    text = str(err.value)
    assert archive.name in text and offline.url in text and offline.md5 in text
    assert "by hand" in text and ".corrupt" in text
    assert not (tmp_path / "o.npz").exists() and not (resources / archive.name).exists()


def test_prepare_without_download_only_checks(tmp_path):
    with pytest.raises(DataUnavailableError, match="cifar-100-python.tar.gz.*does not exist"):
        prepare_dataset("cifar100", tmp_path, tmp_path / "o.npz", download=False)
    with pytest.raises(DataUnavailableError) as err:  # one error lists every missing file
        prepare_human("cifar10h", tmp_path, tmp_path / "h.npz", download=False)
    assert "cifar-10-python.tar.gz" in str(err.value) and "cifar10h-counts.npy" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_prepare_cifar10h_combines_images_labels_and_counts(tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    archive, batch = write_cifar10(resources / "cifar-10-python.tar.gz")
    counts_path = resources / "cifar10h-counts.npy"
    np.save(counts_path, counts_for(np.array(batch[b"labels"])))
    sources = {
        p.name: RemoteFile(p.name, "http://127.0.0.1:9/x", md5(p)) for p in (archive, counts_path)
    }
    out = tmp_path / "human.npz"
    prepare_human("cifar10h", resources, out, sources=sources)  # placed by hand: no download
    human = io.load_npz(out)
    validate_human(human)
    assert np.array_equal(human["labels"], batch[b"labels"])
    assert np.array_equal(human["human_counts"], np.load(counts_path))
    assert human["class_names"].tolist() == CIFAR10_NAMES
    # counts in another order than the test batch are refused
    shuffled = np.load(counts_path)[np.random.default_rng(0).permutation(30)]
    np.save(counts_path, shuffled)
    sources[counts_path.name] = RemoteFile(
        counts_path.name, "http://127.0.0.1:9/x", md5(counts_path)
    )
    with pytest.raises(DataFormatError, match="test-set order"):
        prepare_human("cifar10h", resources, out, sources=sources)
