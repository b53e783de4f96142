"""Per-epoch cache: results are reused only when everything they depend on is unchanged."""

import numpy as np
import pandas as pd

from ssltrace import io, layout
from ssltrace.analysis import analysis
from ssltrace.analysis.base import Job, run_job
from ssltrace.store import EpochCache, make_key

SETTINGS = {"shots": 2, "trials": 3, "distance": "sqeuclidean", "seed": 0}


def write_acts(path, epoch, shift=0.0):
    rng = np.random.default_rng(epoch)
    labels = np.repeat(np.arange(4), 6)
    io.save_npz(
        path,
        {
            "a": rng.normal(size=(24, 5)) + labels[:, None] + shift,
            "layers": np.array(["a"]),
            "labels": labels,
            "coarse": labels // 2,
            "class_names": np.array(list("wxyz")),
            "coarse_names": np.array(["p", "q"]),
            "epoch": np.int64(epoch),
            "cache_key": np.array(make_key("acts", epoch, shift)),
        },
    )


def test_keys_change_with_any_part():
    assert make_key("x", 1, {"a": 1}) == make_key("x", 1, {"a": 1})
    assert make_key("x", 1, {"a": 1}) != make_key("x", 1, {"a": 2})
    assert make_key("x", 1) != make_key("x", 2)


def test_cache_round_trip_and_disabled_cache(tmp_path):
    cache = EpochCache(tmp_path, "stage")
    rows = [["layer1", "m", 0.5]]
    cache.save_result("ab" * 32, rows, {"x": np.arange(3)})
    got_rows, arrays = cache.load_result("ab" * 32)
    assert got_rows == rows and (arrays["x"] == np.arange(3)).all()
    assert EpochCache(None, "stage").load_result("ab" * 32) is None


def fewshot(folder, epochs, out, settings, cache_dir, log=print):
    """The fewshot analysis on the epoch files in `folder`; (table, errors) written to out_*."""
    job = Job("m", 0, epochs, {"novel": folder}, cache_dir=cache_dir, log=log)
    run_job(analysis("fewshot")(settings), job, out.with_suffix(".tsv"), {"errors": out})
    return pd.read_csv(out.with_suffix(".tsv"), sep="\t"), io.load_npz(out)["errors"]


def test_fewshot_reuses_unchanged_epochs_only(tmp_path):
    acts, cache = tmp_path / "novel", tmp_path / "cache"
    for epoch in range(2):
        write_acts(acts / layout.epoch_file(epoch), epoch)
    logs = []
    fewshot(acts, [0, 1], tmp_path / "m1.npz", SETTINGS, cache, logs.append)
    write_acts(acts / layout.epoch_file(2), 2)
    write_acts(acts / layout.epoch_file(1), 1, shift=3.0)  # epoch 1 changed: its key changes
    logs.clear()
    table, errors = fewshot(acts, [0, 1, 2], tmp_path / "m2.npz", SETTINGS, cache, logs.append)
    assert logs[0].endswith("epoch 0: cached")
    assert "epoch 1: 1 values" in logs[1] and "epoch 2: 1 values" in logs[2]
    # cached results are identical to computing afresh
    fresh_table, fresh_errors = fewshot(acts, [0, 1, 2], tmp_path / "m3.npz", SETTINGS, None)
    pd.testing.assert_frame_equal(table, fresh_table)
    assert np.array_equal(errors, fresh_errors)
    # a changed setting misses the cache
    logs.clear()
    fewshot(acts, [0, 1, 2], tmp_path / "m4.npz", {**SETTINGS, "shots": 3}, cache, logs.append)
    assert not any("cached" in line for line in logs) and len(logs) == 3
