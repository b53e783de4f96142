"""Nothing half-written, every fault named: atomic artifact writes (also under SIGKILL), a
full disk, a results directory that cannot be written, damaged data and artifacts — each
reported as one message naming the path, at the io layer, through the CLI and the workflow."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ssltrace import io
from ssltrace.config import defaults
from tests import tiny_study

OFFLINE = {  # urllib honours these: any download is refused at once, never reaches the internet
    **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
    "no_proxy": "",
    "NO_PROXY": "",
}


SMALL = '{"train_per_class": 2, "test_per_class": 2}'  # a synthetic set made in a blink


def cli(*args, env=None):
    """Run the `ssltrace` command; return (returncode, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ssltrace.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **OFFLINE, **(env or {})},
    )
    return proc.returncode, proc.stderr


def assert_one_error_line(returncode, stderr, *needles):
    """The CLI failed with one `ssltrace X: error:` line holding every needle, no traceback."""
    assert returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])
    return errors[0]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ----------------------------------------------------------------------------- atomic writes
WRITERS = {
    "write_text": (lambda p: io.write_text(p, "a\tb\n"), "out.txt"),
    "write_json": (lambda p: io.write_json(p, {"a": [1, 2]}), "out.json"),
    "save_npz": (lambda p: io.save_npz(p, {"x": np.arange(5)}), "out.npz"),
    "save_npz_compressed": (lambda p: io.save_npz(p, {"x": np.arange(5)}, compress=True), "c.npz"),
    "save_table": (lambda p: io.save_table(p, pd.DataFrame({"v": [1.5]})), "out.tsv"),
    "torch_save": (lambda p: io.torch_save(p, {"w": torch.ones(3)}), "out.pt"),
}
DIGESTED = {"write_json", "save_table"}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_renames_a_complete_temp_from_the_same_directory(
    tmp_path, monkeypatch, writer
):
    write, name = WRITERS[writer]
    dest = tmp_path / "deep" / name
    write(dest)  # a first version: the rewrite below must replace it atomically
    first = {p: p.read_bytes() for p in (dest, io.digest_path(dest)) if p.exists()}
    real_replace, seen = os.replace, []

    def spying_replace(src, dst, *args, **kwargs):
        src, dst = Path(src), Path(dst)
        seen.append((src, dst))
        assert src.parent == dst.parent  # same file system: the rename is atomic
        assert src.name.startswith(f".{dst.name}.") and ".tmp" in src.name  # hidden temp
        assert dst.read_bytes() == first[dst]  # the old version stays whole until the rename
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spying_replace)
    write(dest)
    # Text artifacts carry their digest, renamed into place first (see ssltrace.io).
    digest = [io.digest_path(dest)] if writer in DIGESTED else []
    assert [dst for _, dst in seen] == [*digest, dest]
    assert not seen[-1][0].exists() and temps(dest.parent) == []
    assert dest.read_bytes() == first[dest]  # same content: the writers are deterministic


def test_link_or_copy_places_the_link_atomically(tmp_path, monkeypatch):
    src = tmp_path / "weights.pt"
    io.torch_save(src, {"w": torch.arange(4)})
    real_replace, seen = os.replace, []
    monkeypatch.setattr(
        os, "replace", lambda a, b: (seen.append((Path(a), Path(b))), real_replace(a, b))
    )
    io.link_or_copy(src, tmp_path / "checkpoints" / "epoch_000.pt")
    (tmp, dst), = seen  # fmt: skip
    assert tmp.parent == dst.parent and tmp.name.startswith(".epoch_000.pt.")
    assert os.path.samefile(src, dst) and temps(dst.parent) == []


def test_a_writer_that_fails_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    dest = tmp_path / "table.npz"
    io.save_npz(dest, {"x": np.arange(3)})
    old = dest.read_bytes()

    def half_then_crash(fh, array, **kwargs):
        fh.write(array.tobytes()[: array.nbytes // 2])
        raise RuntimeError("crashed mid-write")

    monkeypatch.setattr(np.lib.format, "write_array", half_then_crash)
    with pytest.raises(RuntimeError, match="crashed mid-write"):
        io.save_npz(dest, {"x": np.arange(1000)})
    assert dest.read_bytes() == old and temps(tmp_path) == []


SLOW_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ssltrace import io
    # ~48 MB of noise compresses slowly: the write takes seconds, the kill lands inside it.
    noise = np.random.default_rng(0).random(6_000_000)
    print("WRITING", flush=True)
    io.save_npz(sys.argv[1], {"noise": noise}, compress=True)
    print("DONE", flush=True)
    """
)


@pytest.mark.parametrize("had_old_version", [True, False])
def test_sigkill_mid_write_leaves_the_old_file_or_nothing(tmp_path, had_old_version):
    dest = tmp_path / "acts.npz"
    if had_old_version:
        io.save_npz(dest, {"noise": np.zeros(3)})
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(dest)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        partial = _wait_for_partial_temp(tmp_path, proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    assert partial.exists() and partial.stat().st_size > 0  # a half-written temp, hidden
    if had_old_version:
        assert np.array_equal(io.load_npz(dest)["noise"], np.zeros(3))
    else:
        assert not dest.exists()
    with pytest.raises(io.ArtifactReadError, match="damaged or truncated"):
        io.load_npz(partial)  # what a non-atomic writer would have left at the real name
    io.save_npz(dest, {"noise": np.ones(2)})  # the rerun's write also removes the stale temp
    assert temps(tmp_path) == [] and np.array_equal(io.load_npz(dest)["noise"], np.ones(2))


def _wait_for_partial_temp(folder: Path, proc, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the writer finished before it could be killed"
        for path in folder.glob(".acts.npz.*.tmp.npz"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > 1_000_000:
                    return path
        time.sleep(0.005)
    raise AssertionError("no partial temp file appeared")


def test_a_rewrite_removes_only_the_stale_temps_of_that_artifact(tmp_path):
    for name in (".a.tsv.k1ll3d_1.tmp", ".a.tsv.k1ll3d_2.tmp", ".b.tsv.k1ll3d_1.tmp", "a.tsv.x"):
        (tmp_path / name).write_text("left by a killed writer")
    io.write_text(tmp_path / "a.tsv", "x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.tsv.k1ll3d_1.tmp", "a.tsv", "a.tsv.x"]


@pytest.mark.slow
def test_every_workflow_artifact_was_renamed_into_place():
    """Every file of a whole tiny study (logs aside: shell redirections) came from a hidden
    temp in its own directory, and no temp is left behind."""
    work = tiny_study.reference()
    renamed = {}
    for record in tiny_study.renames_of(work):
        src, dst = Path(record["src"]), Path(record["dst"])
        assert src.parent == dst.parent and src.name.startswith(f".{dst.name}."), record
        renamed[dst] = src
    results = (work / "results").resolve()
    files = [  # the training lock holds no result: it is opened in place, never renamed
        p
        for p in results.rglob("*")
        if p.is_file()
        and "logs" not in p.parts
        and p.name not in (".snakemake_timestamp", ".train.lock")
    ]
    assert len(files) > 40
    assert [p for p in files if p not in renamed] == []
    assert tiny_study.temp_leftovers(results) == []


# ----------------------------------------------------------------------------- full disk
def test_a_full_disk_is_named_with_the_path_and_the_old_file_survives(tmp_path, monkeypatch):
    dest = tmp_path / "metrics" / "fewshot.tsv"
    io.write_text(dest, "old\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # where a full disk shows on many file systems
    with pytest.raises(io.ArtifactWriteError) as err:
        io.write_text(dest, "new\n")
    assert str(err.value) == f"cannot write {dest}: the disk is full"
    assert err.value.errno == errno.ENOSPC
    assert dest.read_text() == "old\n" and temps(dest.parent) == []


@contextlib.contextmanager
def mounted(folder: Path, *options: str):
    """`mount OPTIONS folder`, unmounted afterwards; skips where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", *options, str(folder)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here (needs root / CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_really_full_file_system_at_the_io_layer_and_the_cli(tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=256k", "tmpfs") as small:
        io.write_text(small / "kept.txt", "fits\n")
        dest = small / "data" / "big.npz"
        with pytest.raises(io.ArtifactWriteError, match=f"cannot write {dest}: the disk is full"):
            io.save_npz(dest, {"x": np.zeros(200_000)})
        assert temps(dest.parent) == [] and not dest.exists()
        assert (small / "kept.txt").read_text() == "fits\n"
        out = small / "data" / "synthetic.npz"
        code, stderr = cli(
            "data", "--name", "synthetic", "--data-dir", tmp_path, "--out", out, "--settings", SMALL
        )
        line = assert_one_error_line(code, stderr, f"cannot write {out}: the disk is full")
        assert line.startswith("ssltrace data: error: cannot write")
        assert not out.exists() and temps(out.parent) == []


def test_a_read_only_results_directory_is_named(tmp_path):
    folder = tmp_path / "results"
    with mounted(folder, "--bind", str(tmp_path / "results")):
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True
        )
        if remount.returncode != 0:
            pytest.skip("cannot remount read-only here")
        dest = folder / "splits" / "split.json"
        with pytest.raises(io.ArtifactWriteError, match="the file system is read-only"):
            io.write_json(dest, {})
        code, stderr = cli(
            "data", "--name", "synthetic", "--data-dir", tmp_path, "--out", folder / "d.npz",
            "--settings", SMALL,
        )  # fmt: skip
        assert_one_error_line(code, stderr, f"cannot write {folder / 'd.npz'}", "read-only")


def test_a_results_dir_under_a_regular_file_is_named(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results directory should be")
    dest = blocker / "splits" / "split.json"
    with pytest.raises(io.ArtifactWriteError) as err:
        io.write_json(dest, {})
    assert str(err.value) == f"cannot write {dest}: {blocker} is a file, not a directory"
    code, stderr = cli(
        "data", "--name", "synthetic", "--data-dir", tmp_path, "--out", blocker / "d.npz",
        "--settings", SMALL,
    )  # fmt: skip
    assert_one_error_line(code, stderr, f"{blocker} is a file, not a directory")


@pytest.mark.slow
def test_a_checkpoint_on_a_full_disk_is_named_not_a_torch_traceback(tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=256k", "tmpfs") as small:
        dest = small / "epoch_001.pt"
        with pytest.raises(io.ArtifactWriteError, match=f"cannot write {dest}: the disk is full"):
            io.torch_save(dest, {"w": torch.zeros(200_000)})
        assert temps(small) == [] and not dest.exists()


def test_a_full_disk_in_the_workflow_is_one_line_in_the_rule_log(tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=256k", "tmpfs") as small:
        work = tiny_study.make_workdir(tmp_path / "work", results_dir=str(small / "results"))
        out = small / "results" / "data" / "synthetic.npz"
        proc = tiny_study.snakemake(work, str(out), check=False)
        assert proc.returncode == 1 and "Error in rule dataset" in proc.stderr
        log = (small / "results" / "logs" / "dataset.log").read_text()
        errors = [line for line in log.splitlines() if "error" in line.lower()]
        assert errors == [f"ssltrace data: error: cannot write {out}: the disk is full"], log
        assert not out.exists()
        assert not out.parent.exists() or temps(out.parent) == []


# ----------------------------------------------------------------------------- data faults
ARCHIVE = "cifar-100-python.tar.gz"


def test_a_damaged_archive_is_moved_aside_and_never_parsed(tmp_path):
    data_dir = tmp_path / "resources"
    data_dir.mkdir()
    damaged = os.urandom(4096)  # e.g. the first 4 kB of an interrupted copy
    (data_dir / ARCHIVE).write_bytes(damaged)
    out = tmp_path / "results" / "cifar100.npz"
    code, stderr = cli("data", "--name", "cifar100", "--data-dir", data_dir, "--out", out)
    line = assert_one_error_line(
        code, stderr, f"{data_dir / ARCHIVE} had md5", f"moved to {data_dir / ARCHIVE}.corrupt"
    )
    assert "downloading it failed" in line
    assert "eb9058c3a382ffc7106e4002c42a8d85" in stderr and "by hand" in stderr
    assert (data_dir / f"{ARCHIVE}.corrupt").read_bytes() == damaged
    assert not (data_dir / ARCHIVE).exists() and not out.exists()


def test_a_half_downloaded_part_file_is_never_taken_for_the_archive(tmp_path):
    data_dir = tmp_path / "resources"
    data_dir.mkdir()
    (data_dir / f"{ARCHIVE}.part").write_bytes(os.urandom(4096))
    out = tmp_path / "cifar100.npz"
    code, stderr = cli("data", "--name", "cifar100", "--data-dir", data_dir, "--out", out)
    assert_one_error_line(code, stderr, f"{ARCHIVE} is not available", "downloading it failed")
    assert list(data_dir.iterdir()) == [] and not out.exists()  # the stale part is gone


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    data_dir = tmp_path / "resources"
    data_dir.write_text("not a directory")
    code, stderr = cli(
        "data", "--name", "cifar100", "--data-dir", data_dir, "--out", tmp_path / "c.npz"
    )
    assert_one_error_line(code, stderr, str(data_dir))


def truncated_copy(src: Path, dst: Path) -> Path:
    blob = src.read_bytes()
    dst.write_bytes(blob[: len(blob) // 2])
    return dst


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_dataset")
    code, stderr = cli(
        "data",
        "--name",
        "synthetic",
        "--out",
        folder / "synthetic.npz",
        "--settings",
        SMALL,
    )
    assert code == 0, stderr
    return folder / "synthetic.npz"


def test_a_truncated_dataset_file_is_named_by_the_next_stage(tmp_path, tiny_dataset):
    bad = truncated_copy(tiny_dataset, tmp_path / "synthetic.npz")
    settings = '{"n_known": 4, "n_novel": 4, "seed": 0}'
    code, stderr = cli(
        "split", "--dataset", bad, "--out", tmp_path / "s.json", "--settings", settings
    )
    assert_one_error_line(
        code, stderr, f"cannot read {bad}: damaged or truncated", "removed it: running snakemake"
    )
    assert not (tmp_path / "s.json").exists()
    assert not bad.exists()  # so the workflow's next run writes it again, instead of failing


def test_a_truncated_dataset_file_is_named_by_pretraining(tmp_path, tiny_dataset):
    bad = truncated_copy(tiny_dataset, tmp_path / "synthetic.npz")
    io.write_json(tmp_path / "split.json", {"known_fine": [0, 1], "novel_fine": [2, 3]})
    run = {
        "method": "untrained", "seed": 0, "method_params": {}, "augment": {"preset": "seed000"},
        "architecture": {"name": "resnet18", "width": 0.125},
        "train": {**defaults()["train"], "epochs": 1},
    }  # fmt: skip
    code, stderr = cli(
        "pretrain", "--dataset", bad, "--split", tmp_path / "split.json", "--out-dir",
        tmp_path / "run", "--settings", json.dumps(run),
    )  # fmt: skip
    assert_one_error_line(code, stderr, f"cannot read {bad}", "removed it")
    assert not bad.exists()


def test_a_truncated_checkpoint_is_named_by_extraction(tmp_path, tiny_dataset):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    io.torch_save(tmp_path / "whole.pt", {"state_dict": {"w": torch.zeros(10_000)}})
    truncated_copy(tmp_path / "whole.pt", ckpts / "epoch_000.pt")
    code, stderr = cli(
        "extract", "--checkpoints-dir", ckpts, "--probe", f"novel={tiny_dataset}", "--epochs",
        "0", "--out-dir", tmp_path / "acts",
    )  # fmt: skip
    assert_one_error_line(code, stderr, f"cannot read {ckpts / 'epoch_000.pt'}", "truncated")
    assert not (tmp_path / "acts" / "novel" / "epoch_000.npz").exists()


# ----------------------------------------------------------------------------- damaged state
def trained_copy(tmp_path) -> Path:
    """The reference's trained run, data and split, copied with their hard links (cp -a): in a
    real run a published checkpoint and its stored epoch are one file."""
    work = tmp_path / "study"
    (work / "results").mkdir(parents=True)
    for part in ("data", "splits", "runs"):
        subprocess.run(
            ["cp", "-a", str(tiny_study.reference() / "results" / part), str(work / "results")],
            check=True,
        )
    return work


def train_again(work: Path, **train) -> str:
    """The reference run trained (or resumed) again in-process, as its job does; its log."""
    from ssltrace import study
    from ssltrace.training import train_run

    cfg = study.checked(tiny_study.tiny_config(), deep=False)
    run = study.run_settings(cfg, "simclr", 0)
    run["train"].update(train)
    lines: list[str] = []
    results = work / "results"
    train_run(
        run, results / "data/synthetic.npz", results / "splits/split.json", work / tiny_study.RUN,
        log=lines.append,
    )  # fmt: skip
    return "\n".join(lines)


def assert_checkpoints_are_the_reference(work: Path) -> None:
    ref = tiny_study.reference() / tiny_study.RUN
    for name in ("epoch_000.pt", "epoch_001.pt", "epoch_002.pt"):
        published = work / tiny_study.RUN / "checkpoints" / name
        assert published.read_bytes() == (ref / "checkpoints" / name).read_bytes(), name
        assert os.path.samefile(published, work / tiny_study.RUN / ".state/epochs" / name)


def flip_byte(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(fh.seek(0, 2) // 2)
        byte = fh.read(1)[0]
        fh.seek(-1, 1)
        fh.write(bytes([byte ^ 1]))


@pytest.mark.slow
def test_a_damaged_last_checkpoint_is_rewritten_from_the_resume_state(tmp_path):
    work = trained_copy(tmp_path)
    flip_byte(work / tiny_study.RUN / "checkpoints/epoch_002.pt")  # both names: one file
    log = train_again(work)
    stored = work / tiny_study.RUN / ".state/epochs/epoch_002.pt"
    assert f"cannot read {stored}: damaged or truncated" in log and "rewrote it from" in log
    assert "epochs 0..2 already trained; nothing to do" in log  # nothing retrained
    assert_checkpoints_are_the_reference(work)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["earlier checkpoint cut", "stored epoch deleted", "resume"])
def test_damaged_training_state_retrains_the_run_bit_identically(tmp_path, fault):
    """Only the last epoch's optimiser state is kept: without it (or with an earlier epoch
    lost) the run starts over, and a deterministic run ends as it was, byte for byte."""
    work = trained_copy(tmp_path)
    run = work / tiny_study.RUN
    if fault == "earlier checkpoint cut":
        truncated_copy(run / "checkpoints/epoch_001.pt", run / "checkpoints/epoch_001.pt")
        expected = f"cannot read {run / '.state/epochs/epoch_001.pt'}: damaged or truncated"
    elif fault == "stored epoch deleted":  # the loop: a message naming the wrong path
        (run / ".state/epochs/epoch_001.pt").unlink()
        expected = f"{run / '.state/epochs/epoch_001.pt'} is missing"
    else:
        flip_byte(run / ".state/resume.pt")
        expected = f"cannot read {run / '.state/resume.pt'}: damaged or truncated"
    log = train_again(work)
    assert f"discarding saved training state ({expected}" in log and "starting over" in log
    assert "epoch 2/2: loss" in log
    assert_checkpoints_are_the_reference(work)
    assert "already trained" in train_again(work)  # healed: a rerun finds nothing to redo


@pytest.mark.slow
def test_a_deterministic_cpu_run_restarts_under_another_thread_count(tmp_path):
    work = trained_copy(tmp_path)
    log = train_again(work, threads=1)
    assert "trained deterministically on the CPU with 2 torch threads, now 1" in log
    assert "starting over" in log and "on 1 torch thread (train.threads)" in log
    recorded = json.loads((work / tiny_study.RUN / ".state/fingerprint.json").read_text())
    assert recorded["threads"] == 1


# ----------------------------------------------------------------------------- healing reruns
def study_copy(tmp_path) -> Path:
    """The whole reference study (Snakemake's metadata too), hard links kept (cp -a)."""
    work = tmp_path / "study"
    subprocess.run(["cp", "-a", str(tiny_study.reference()), str(work)], check=True)
    return work


def error_lines(work: Path) -> list[str]:
    logs = (work / "results" / "logs").rglob("*.log")
    return [line for log in logs for line in log.read_text().splitlines() if ": error: " in line]


def assert_same_as_reference(work: Path, *names: str) -> None:
    for name in names:
        assert (work / name).read_bytes() == (tiny_study.reference() / name).read_bytes(), name


@pytest.mark.slow
def test_a_damaged_study_heals_by_rerunning_the_commands_that_read_it(tmp_path):
    """The issue's cases in one study: a per-run table cut exactly at a line boundary (still
    well-formed TSV), a checkpoint damaged in place (its stored epoch is the same file) and a
    cached activation damaged through its published name. Each stage that reads a damaged file
    fails naming it and removes it (with the job output holding it); running the same commands
    again recomputes everything, identical to an undamaged study. (Every kind, one by one:
    tests/test_io.py; the training state: the tests above.)"""
    work = study_copy(tmp_path)
    per_run = work / "results/metrics/geometry/simclr/seed0.tsv"
    lines = per_run.read_bytes().splitlines(keepends=True)
    per_run.write_bytes(b"".join(lines[:-2]))
    flip_byte(work / tiny_study.RUN / "checkpoints/epoch_001.pt")
    acts = work / "results/activations/simclr/seed0/novel"
    truncated_copy(acts / "epoch_002.npz", acts / "epoch_002.npz")  # in place: the cache's too

    # The cut table's new mtime makes a plain rerun stack it again: it is never consumed.
    target = tiny_study.TABLES[4]  # tables/geometry.tsv
    first = tiny_study.snakemake(work, target, check=False)
    assert first.returncode == 1 and not (work / target).exists()
    table = per_run.relative_to(work)
    assert error_lines(work) == [
        f"ssltrace collect: error: cannot read {table}: its content differs from the sha256 "
        f"recorded in .{per_run.name}.sha256 when it was written (changed or damaged since); "
        "removed it: running snakemake again recomputes it",
    ]
    # The damaged checkpoint is found by the extraction that reads it (here its job's command).
    ckpts = "results/runs/simclr/seed0/checkpoints"
    proc = subprocess.run(
        [sys.executable, "-m", "ssltrace.cli", "extract", "--checkpoints-dir", ckpts,
         "--probe", "novel=results/probes/novel.npz", "--epochs", "0", "1", "2",
         "--out-dir", str(tmp_path / "acts")],
        capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    assert_one_error_line(
        proc.returncode, proc.stderr,
        f"ssltrace extract: error: cannot read {ckpts}/epoch_001.pt: damaged or truncated "
        "(BadZipFile: Bad CRC-32 for file 'archive/data/96'); removed it and the folder "
        f"{ckpts} holding it: running snakemake again recomputes them",
    )  # fmt: skip
    assert not (work / ckpts).exists()

    tiny_study.snakemake(work, target, str(acts.relative_to(work)), "--forcerun", "extract")
    log = (work / "results/logs/pretrain/simclr_seed0.log").read_text()
    assert "epoch_001.pt: damaged or truncated" in log and "starting over" in log
    extract_log = (work / "results/logs/extract/simclr_seed0.log").read_text()
    assert "dropped a damaged cache entry" in extract_log
    assert_checkpoints_are_the_reference(work)
    assert_same_as_reference(work, str(table), target)
    reference = tiny_study.reference() / acts.relative_to(work)
    for epoch in range(3):
        got, want = (io.load_npz(d / f"epoch_{epoch:03d}.npz") for d in (acts, reference))
        assert all(np.array_equal(got[k], want[k]) for k in want), epoch
