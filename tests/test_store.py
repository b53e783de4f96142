"""Per-epoch cache: results are reused only when everything they depend on is unchanged."""

import numpy as np
import pandas as pd

from ssltrace import io
from ssltrace.metrics import fewshot_run
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


def test_fewshot_reuses_unchanged_epochs_only(tmp_path):
    files = [tmp_path / f"e{e}.npz" for e in range(3)]
    for e, f in enumerate(files[:2]):
        write_acts(f, e)
    logs = []
    run = dict(method="m", seed=0, probe="novel", cache_dir=tmp_path / "cache", log=logs.append)
    fewshot_run(files[:2], tmp_path / "t1.tsv", tmp_path / "m1.npz", settings=SETTINGS, **run)
    write_acts(files[2], 2)
    write_acts(files[1], 1, shift=3.0)  # epoch 1 changed: its key changes
    logs.clear()
    fewshot_run(files, tmp_path / "t2.tsv", tmp_path / "m2.npz", settings=SETTINGS, **run)
    assert logs[0].endswith("epoch 0: cached")
    assert "epoch 1: computed" in logs[1] and "epoch 2: computed" in logs[2]
    # cached results are identical to computing afresh
    fewshot_run(
        files,
        tmp_path / "t3.tsv",
        tmp_path / "m3.npz",
        settings=SETTINGS,
        **{**run, "cache_dir": None},
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "t2.tsv", sep="\t"), pd.read_csv(tmp_path / "t3.tsv", sep="\t")
    )
    assert np.array_equal(
        io.load_npz(tmp_path / "m2.npz")["errors"], io.load_npz(tmp_path / "m3.npz")["errors"]
    )
    # a changed setting misses the cache
    logs.clear()
    fewshot_run(
        files, tmp_path / "t4.tsv", tmp_path / "m4.npz", settings={**SETTINGS, "shots": 3}, **run
    )
    assert all("computed" in line for line in logs)
