"""Artifact writing speed: ssltrace.io (atomic, byte-reproducible) against the plain calls.

io.save_npz writes its own zip members (fixed timestamps, no pickles) instead of calling
np.savez, and io.torch_save hands torch a file object instead of a path; both also fsync and
rename. This prints how much that costs against np.savez / torch.save (+ the same fsync) on the same
arrays.

    python benchmarks/bench_io.py [--mb 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssltrace import io


def fsynced(func, path: Path):
    """`func` followed by an fsync of `path`: the durability io adds before each rename."""

    def run():
        func()
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())

    return run


def best_of(repeats: int, func) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the arrays written")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.mb * 2**20 // 4
    # Activations-like: one float32 matrix per layer.
    arrays = {f"layer{i}": rng.standard_normal(n // 4, dtype=np.float32) for i in range(4)}
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = [
            (
                "npz",
                fsynced(lambda: np.savez(out / "a.npz", **arrays), out / "a.npz"),
                lambda: io.save_npz(out / "b.npz", arrays),
            ),
            (
                "npz compressed",
                fsynced(lambda: np.savez_compressed(out / "c.npz", **arrays), out / "c.npz"),
                lambda: io.save_npz(out / "d.npz", arrays, compress=True),
            ),
            (
                "torch",
                fsynced(lambda: torch.save(state, out / "e.pt"), out / "e.pt"),
                lambda: io.torch_save(out / "f.pt", state),
            ),
        ]
        print(f"{args.mb} MB, best of {args.repeats}; baseline = the plain call + fsync")
        print(f"{'what':16s} {'baseline s':>10s} {'ssltrace.io s':>14s} {'ratio':>6s}")
        for name, plain, ours in rows:
            t_plain, t_ours = best_of(args.repeats, plain), best_of(args.repeats, ours)
            print(f"{name:16s} {t_plain:10.3f} {t_ours:14.3f} {t_ours / t_plain:6.2f}")
        loaded = io.load_npz(out / "b.npz")
        assert all(np.array_equal(loaded[k], v) for k, v in arrays.items())


if __name__ == "__main__":
    main()
