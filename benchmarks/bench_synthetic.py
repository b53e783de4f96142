"""Speed of the synthetic dataset generator (one process; numpy may use its own threads).

Prints images/s and total seconds for the default 60,000-image `synthetic` dataset
(100 classes x (500 train + 100 test)), throughput per texture family, and two ratios measured
in the same run: against the 60 s budget, and against a floor that only draws random uint8
images of the same size (what any generator must at least spend on memory and randomness).

    python benchmarks/bench_synthetic.py [--train-per-class 500] [--test-per-class 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssltrace.data.synthetic import (
    FAMILIES,
    N_FINE_PER_COARSE,
    human_set,
    render_fine_class,
    synthetic_dataset,
)

BUDGET_S = 60.0


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _cpu_timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process): CPU time stays meaningful when
    other work shares the cores."""
    cpu = time.process_time()
    out, wall = _timed(fn, *args, **kwargs)
    return out, wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()

    data, total, cpu = _cpu_timed(synthetic_dataset, 0, args.train_per_class, args.test_per_class)
    n = len(data["train_images"]) + len(data["test_images"])
    rng = np.random.default_rng(0)
    _, floor = _timed(rng.integers, 0, 256, (n, 32, 32, 3), dtype=np.uint8)
    print(f"synthetic dataset: {n} images in {total:.1f} s = {n / total:,.0f} images/s")
    print(f"  CPU time {cpu:.1f} s = {n / cpu:,.0f} images per CPU-second")
    print(f"  budget 60 s for 60,000 images: used {total / BUDGET_S * 60_000 / n:.0%}")
    print(
        f"  floor (random uint8 images of the same size): {floor:.2f} s; "
        f"generator / floor = {total / floor:.0f}x"
    )

    print("per family (250 images of the middle fine class):")
    for k, family in enumerate(FAMILIES):
        _, dt = _timed(render_fine_class, k * N_FINE_PER_COARSE + 2, 250, seed=0)
        print(f"  {family.name:12s} {250 / dt:8,.0f} images/s")

    human, dt = _timed(human_set, 0, 1000)
    print(
        f"synthetic human set: {len(human['images'])} images in {dt:.1f} s "
        f"= {len(human['images']) / dt:,.0f} images/s"
    )


if __name__ == "__main__":
    main()
