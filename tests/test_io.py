"""Every file kind the workflow writes, damaged after it was written (cut in half, cut at a line
boundary, one byte flipped): the stage that reads it detects it, removes it and says so in one
line naming it, so that the workflow's next run recomputes it instead of failing on it again.
Stores that hand files out (the resume state, the per-epoch caches) drop a damaged entry and
recompute it. The end-to-end reruns are in tests/test_reliability.py.
"""

from __future__ import annotations

import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace import io, tables
from ssltrace.analysis.base import read_activations
from ssltrace.figures.readers import load_arrays
from ssltrace.store import EpochCache, make_key
from ssltrace.training.state import StateStore

RNG = np.random.default_rng(0)
ROWS = [
    {"method": "simclr", "seed": 0, "epoch": e, "layer": f"layer{i}", "probe": "novel",
     "metric": "fewshot_error", "value": float(RNG.random())}
    for e in range(3) for i in range(4)
]  # fmt: skip


def cut(path: Path, where: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * where)])


def cut_at_line(path: Path) -> None:
    """Drop the last two lines: what remains is a well-formed, shorter table."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))


def flip(path: Path, position: int | None = None) -> None:
    """Flip the lowest bit of one byte in place (the file's other names see it too)."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, 2)
        position = size // 2 if position is None else position
        fh.seek(position)
        byte = fh.read(1)[0]
        fh.seek(position)
        fh.write(bytes([byte ^ 1]))


def largest_member_middle(path: Path, name: str | None = None) -> int:
    """An offset inside the data of a zip archive's largest member (or the one whose name ends
    with `name`), so that a flip there changes content."""
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if name is None or i.filename.endswith(name)]
        info = max(infos, key=lambda i: i.compress_size)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size // 2


def member_data(path: Path) -> set[int]:
    """Offsets of every member's data (for .npz: each array's .npy header and values)."""
    offsets = set()
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
            start = info.header_offset + 30 + int(name_len) + int(extra_len)
            offsets.update(range(start, start + info.compress_size))
    return offsets


# Each kind: (write it at the path, read it as its stage does, expected content marker).
def write_dataset(path):
    io.save_npz(path, {
        "train_images": RNG.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8),
        "train_fine": np.arange(40) % 4, "fine_names": np.array(list("abcd")),
    })  # fmt: skip


def write_probe(path):
    io.save_npz(path, {
        "images": RNG.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
        "labels": np.arange(20) % 4, "class_names": np.array(list("abcd")),
    })  # fmt: skip


def write_activation(path):
    io.save_npz(path, {
        "layer1": RNG.random((20, 64), dtype=np.float32), "layers": np.array(["layer1"]),
        "labels": np.arange(20) % 4, "epoch": np.int64(1),
        "cache_key": np.array(make_key("acts", 1)),
    })  # fmt: skip


def write_matrix(path):
    io.save_npz(path, {"errors": RNG.random((3, 4, 5, 5)), "layers": np.array(list("wxyz"))})


def write_split(path):
    io.write_json(path, {"seed": 0, "known_fine": [0, 1, 2, 3], "novel_fine": [4, 5, 6, 7]})


def write_metric_table(path):
    io.save_table(path, tables.frame(ROWS))


def write_study_table(path):
    per_run = path.parent / "per_run.tsv"
    io.save_table(per_run, tables.frame(ROWS))
    tables.concat([per_run], path)


def write_train_log(path):
    io.save_table(path, pd.DataFrame(
        {"epoch": [1, 2, 3, 4], "loss": [4.6, 4.4, 4.3, 4.2], "invariance": [-0.5] * 4,
         "regularisation": [5.0] * 4, "lr": [0.1] * 4, "seconds": [1.0] * 4,
         "images_per_s": [100.0] * 4}
    ))  # fmt: skip


def checkpoint(epoch=1):
    gen = torch.Generator().manual_seed(epoch)
    return {"format": "ssltrace-checkpoint/1", "epoch": epoch,
            "state_dict": {"conv.weight": torch.randn(64, 3, 3, 3, generator=gen),
                           "bn.bias": torch.randn(64, generator=gen)}}  # fmt: skip


def read_checkpoint_link(path):
    return io.torch_load(path)


def read_activation(path):
    # The extraction's output folder, marked by Snakemake, goes too: the workflow reruns a
    # job whose folder is missing, not one whose folder lacks a file.
    return read_activations(path, path.parent)


KINDS = {
    "dataset": ("data/synthetic.npz", write_dataset, io.load_npz),
    "split": ("splits/split.json", write_split, io.read_json),
    "probe": ("probes/novel.npz", write_probe, io.load_npz),
    "activation": ("novel/epoch_001.npz", write_activation, read_activation),
    "matrix": ("metrics/seed0_errors.npz", write_matrix, lambda p: load_arrays(p, ["errors"])),
    "metric table": ("metrics/seed0.tsv", write_metric_table, tables.read),
    "study table": ("tables/fewshot.tsv", write_study_table, tables.read),
    "train log": ("runs/seed0/train_log.tsv", write_train_log, tables.read_train_log),
}
TEXT = {"split", "metric table", "study table", "train log"}
CASES = [(kind, damage) for kind in KINDS for damage in ("cut", "flip")] + [
    (kind, "cut at a line") for kind in sorted(TEXT)
]


def damage(path: Path, how: str) -> None:
    if how == "cut":
        cut(path)
    elif how == "cut at a line":
        cut_at_line(path)
    else:
        flip(path, largest_member_middle(path) if path.suffix == ".npz" else None)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_reads_back_unchanged(tmp_path, kind):
    """The verification passes what was written (a reader that refused all would pass below)."""
    rel, write, read = KINDS[kind]
    path = tmp_path / rel
    write(path)
    path.parent.joinpath(io.SNAKEMAKE_TIMESTAMP).touch()
    first = read(path)
    assert path.exists()
    second = read(path)
    if isinstance(first, pd.DataFrame):
        pd.testing.assert_frame_equal(first, second)
        assert first["epoch"].dtype == np.int64
    elif isinstance(first, dict) and kind != "split":
        assert all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_a_damaged_file_is_named_removed_and_never_read(tmp_path, kind, how):
    rel, write, read = KINDS[kind]
    path = tmp_path / rel
    write(path)
    (path.parent / io.SNAKEMAKE_TIMESTAMP).touch()  # as in a Snakemake directory output
    damage(path, how)
    with pytest.raises(io.ArtifactReadError) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(f"cannot read {path}: "), message
    assert "running snakemake again recomputes" in message and "\n" not in message
    assert not path.exists() and not io.digest_path(path).exists()
    if kind == "activation":
        assert f"removed it and the folder {path.parent} holding it" in message
        assert not path.parent.exists()


def test_a_table_without_a_digest_is_checked_but_never_removed(tmp_path):
    """A table not written by ssltrace (no digest beside it) may be someone's only copy."""
    path = tmp_path / "mine.tsv"
    write_metric_table(path)
    io.digest_path(path).unlink()
    cut(path, 0.7)  # mid-line
    with pytest.raises(io.ArtifactReadError, match="its last line is incomplete") as err:
        tables.read(path)
    assert path.exists() and "delete it and rerun the step that writes it" in str(err.value)
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], text[1].replace("\t0\t", "\t\t", 1)]) + "\n")
    with pytest.raises(io.ArtifactReadError, match=r"line 2 has no 'seed'"):
        tables.read(path)
    path.write_text("method\tseed\n")
    with pytest.raises(io.ArtifactReadError, match="lacks column 'epoch'"):
        tables.read(path)
    assert path.exists()


def test_a_run_named_like_a_missing_value_is_a_name(tmp_path):
    path = tmp_path / "t.tsv"
    io.save_table(path, tables.frame([{**ROWS[0], "method": "NA", "layer": "null"}]))
    table = tables.read(path)
    assert table["method"].tolist() == ["NA"] and table["layer"].tolist() == ["null"]


def test_every_flipped_byte_of_an_npz_is_detected_or_changes_nothing(tmp_path):
    """One flipped bit anywhere in an .npz: either the read fails naming the file, or what is
    read is exactly what was written (a flip in zip bookkeeping that nothing reads)."""
    path = tmp_path / "a.npz"
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "names": np.array(["ab", "c"])}
    io.save_npz(path, arrays)
    clean = path.read_bytes()
    content = member_data(path)
    silent = 0
    for position in range(len(clean)):
        blob = bytearray(clean)
        blob[position] ^= 1
        path.write_bytes(bytes(blob))
        try:
            got = io.load_npz(path, remove=False)
        except io.ArtifactReadError:
            continue
        assert got.keys() == arrays.keys(), position
        assert all(np.array_equal(got[k], arrays[k]) for k in arrays), position
        assert position not in content  # a flip in an array (or its header) never passes
        silent += 1
    assert 0 < silent < len(clean) - len(content)


def test_every_flipped_byte_of_a_checkpoint_is_detected_or_changes_nothing(tmp_path):
    """torch's reader does not check CRCs (a flipped weight loads silently); torch_load does."""
    path = tmp_path / "epoch_001.pt"
    state = {"epoch": 1, "state_dict": {"w": torch.arange(16.0)}}
    io.torch_save(path, state)
    clean = path.read_bytes()
    blob = bytearray(clean)
    blob[largest_member_middle(path, "data/0")] ^= 1  # inside the tensor
    path.write_bytes(bytes(blob))
    changed = torch.load(path, weights_only=True)["state_dict"]["w"]
    assert not torch.equal(changed, state["state_dict"]["w"])  # what torch alone lets through
    for position in range(0, len(clean), 3):
        blob = bytearray(clean)
        blob[position] ^= 1
        path.write_bytes(bytes(blob))
        try:
            got = io.torch_load(path, remove=False)
        except io.ArtifactReadError:
            continue
        assert got["epoch"] == 1 and torch.equal(got["state_dict"]["w"], torch.arange(16.0))


# ----------------------------------------------------------------------------- stores
@pytest.mark.parametrize("how", ["cut", "flip"])
def test_a_damaged_checkpoint_is_found_under_both_of_its_names(tmp_path, how):
    store = StateStore(tmp_path / "run")
    for epoch in range(3):
        store.save_epoch(epoch, checkpoint(epoch))
    link = store.checkpoints_dir / "epoch_001.pt"
    damage(link, how)  # in place: .state/epochs/epoch_001.pt is the same file
    with pytest.raises(io.ArtifactReadError, match=f"cannot read {link}: damaged or truncated"):
        io.torch_load(link)
    assert not link.exists()
    bad = store.damaged_epochs(2)
    assert list(bad) == [1] and str(store.epoch_path(1)) in bad[1]
    assert not store.epoch_path(1).exists()  # removed: never relinked, never resumed from
    assert store.damaged_epochs(2) == {1: f"{store.epoch_path(1)} is missing"}


@pytest.mark.parametrize("how", ["cut", "flip"])
def test_a_damaged_resume_state_is_dropped(tmp_path, how):
    store = StateStore(tmp_path / "run")
    store.save_resume({"epoch": 1, "optimizer": {"m": torch.randn(256)}, "rows": []})
    damage(store.resume_path, how)
    state, reason = store.load_resume()
    assert state is None and reason.startswith(f"cannot read {store.resume_path}: damaged")
    assert not store.resume_path.exists()
    assert store.load_resume() == (None, None)


def test_a_damaged_fingerprint_is_trusted_only_where_it_proves_the_settings(tmp_path):
    store = StateStore(tmp_path / "run")
    settings = {"method": "simclr", "train": {"lr": 0.1}}
    store.reset(settings, threads=2)
    saved = json.loads(store.fingerprint_path.read_text())
    for damaged in (
        {**saved, "fingerprint": "0" + saved["fingerprint"][1:]},  # the hash: description proves
        {**saved, "description": {"method": "simclr"}},  # the description: the hash proves
    ):
        store.fingerprint_path.write_text(json.dumps(damaged))
        assert store.mismatch(settings, threads=2) is None
    neither = {**saved, "fingerprint": "0" * 64, "description": {"method": "simclr"}}
    store.fingerprint_path.write_text(json.dumps(neither))
    assert store.mismatch(settings, threads=2) == "train: '(absent)' -> {'lr': 0.1}"
    store.fingerprint_path.write_text(store.fingerprint_path.read_text()[:20])
    assert store.mismatch(settings, threads=2) == "no readable fingerprint.json"


def test_a_deterministic_cpu_run_resumes_only_on_its_thread_count(tmp_path):
    store = StateStore(tmp_path / "run")
    store.reset({"seed": 0}, threads=2)
    assert store.mismatch({"seed": 0}, threads=2) is None
    assert store.mismatch({"seed": 0}, threads=None) is None  # moved to a GPU: as before
    reason = store.mismatch({"seed": 0}, threads=1)
    assert "with 2 torch threads, now 1" in reason and "train.threads: 2" in reason


@pytest.mark.parametrize("how", ["cut", "flip"])
def test_a_damaged_activation_cache_entry_is_dropped_not_linked(tmp_path, how):
    logs = []
    cache = EpochCache(tmp_path / "cache", "activations", log=logs.append)
    published = tmp_path / "acts" / "novel" / "epoch_001.npz"
    write_activation(published)
    cache.keep("ab" * 32, published)
    assert cache.place("ab" * 32, tmp_path / "elsewhere.npz")  # a sound entry is linked
    damage(published, how)  # the published file and the entry are one file
    published.unlink()
    assert not cache.place("ab" * 32, published)
    assert not published.exists() and cache.lookup("ab" * 32) is None
    assert len(logs) == 1 and "dropped a damaged cache entry" in logs[0]


@pytest.mark.parametrize("how", ["cut", "flip"])
def test_a_damaged_analysis_cache_entry_is_recomputed(tmp_path, how):
    logs = []
    cache = EpochCache(tmp_path / "cache", "fewshot", log=logs.append)
    cache.save_result("cd" * 32, [["layer1", "novel", "err", 0.5]], {"errors": np.eye(40)})
    assert cache.load_result("cd" * 32) is not None
    damage(cache.path("cd" * 32), how)
    assert cache.load_result("cd" * 32) is None
    assert cache.lookup("cd" * 32) is None and "dropped a damaged cache entry" in logs[0]


def test_a_missing_activation_removes_its_folder_when_snakemake_made_it(tmp_path):
    folder = tmp_path / "novel"
    write_activation(folder / "epoch_000.npz")
    (folder / io.SNAKEMAKE_TIMESTAMP).touch()
    with pytest.raises(io.ArtifactReadError) as err:
        read_activations(folder / "epoch_001.npz", folder)
    assert str(err.value) == (
        f"activations {folder / 'epoch_001.npz'} are missing; removed the folder {folder} "
        "holding it: running snakemake again recomputes them"
    )
    assert not folder.exists()
    write_activation(folder / "epoch_000.npz")  # a folder Snakemake did not make: kept, named
    with pytest.raises(io.ArtifactReadError, match=f"delete the folder {folder} and rerun"):
        read_activations(folder / "epoch_001.npz", folder)
    assert (folder / "epoch_000.npz").exists()


def test_a_second_trainer_waits_for_the_first(tmp_path):
    """An orphaned trainer (its Snakemake killed) and the rerun's trainer never train at once."""
    store, said, order = StateStore(tmp_path / "run"), [], []
    entered = threading.Event()

    def first():
        with store.locked(said.append):
            entered.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(10)
    with store.locked(said.append):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
    assert len(said) == 1 and said[0].startswith("waiting: process ")
