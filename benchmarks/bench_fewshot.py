"""Vectorised pairwise m-shot prototype errors vs the per-pair reference loop.

Default size is the seed-000 scale: 50 classes × 600 samples × 512 dims, 100 trials, 5 shots.
The loop would take minutes at that size, so it runs a few trials and its time is
extrapolated linearly to all trials (its cost is the same for every trial); the printout
says so. Also timed: the plain float64 vectorised version the fast path (float32 scores,
float64 recheck of the rows float32 could decide wrongly) replaced; the fast result must equal
it exactly, and the loop's on the same few trials.

    python benchmarks/bench_fewshot.py                # full size
    python benchmarks/bench_fewshot.py --threads 1    # torch threads (default: torch's)
    python benchmarks/bench_fewshot.py --quick        # small, a few seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ssltrace.analysis import fewshot
from ssltrace.analysis.fewshot import (
    draw_shots,
    mean_offdiagonal,
    pairwise_prototype_errors,
    pairwise_prototype_errors_loop,
)
from ssltrace.analysis.probes import resolve_device


def make_features(n_classes: int, per_class: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    # Isotropic noise of norm ~1 around centres ~dim**-0.25 apart: 5-shot errors near 0.2
    # whatever the dimension, as in real layers, so comparisons are not all one-sided.
    centres = rng.normal(scale=0.8 * dim**-0.75, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    return features.astype(np.float32), labels


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 classes × 100 × 64, 20 trials")
    parser.add_argument("--classes", type=int)
    parser.add_argument("--per-class", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--loop-trials", type=int, help="trials the loop runs (default 2)")
    parser.add_argument("--distance", default="sqeuclidean", choices=["sqeuclidean", "cosine"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = (10, 100, 64, 20) if args.quick else (50, 600, 512, 100)
    n_classes = args.classes or size[0]
    per_class = args.per_class or size[1]
    dim = args.dim or size[2]
    trials = args.trials or size[3]
    loop_trials = min(args.loop_trials or 2, trials)
    device = resolve_device(args.device)
    common = dict(shots=args.shots, distance=args.distance, seed=0)

    features, labels = make_features(n_classes, per_class, dim)
    print(
        f"{n_classes} classes × {per_class} samples × {dim} dims, {trials} trials, "
        f"m={args.shots}, {args.distance}; device {device}, torch threads "
        f"{torch.get_num_threads()}"
    )
    pairwise_prototype_errors(features, labels, trials=1, device=device, **common)  # warm-up

    fast, fast_s = timed(
        pairwise_prototype_errors, features, labels, trials=trials, device=device, **common
    )
    plan = draw_shots(labels, args.shots, trials, seed=0)
    x = torch.as_tensor(features)
    stats = {}
    fewshot._mean_over_tests(x, plan, args.distance, device, "sign", stats=stats)
    print(
        f"vectorised (float32 + recheck), {trials} trials: {fast_s:9.3f} s  "
        f"(rows rechecked in float64: {stats['rechecked']} of {stats['rows']}, "
        f"{stats['rechecked'] / stats['rows']:.2%})"
    )
    reference, reference_s = timed(
        fewshot._float64_reference, x, plan, args.distance, "sign", device
    )
    print(
        f"vectorised float64 (previous), {trials} trials: {reference_s:9.3f} s  "
        f"(identical result: {np.array_equal(fast, reference)}; "
        f"fast path {reference_s / fast_s:.2f}× faster)"
    )

    slow, loop_s = timed(
        pairwise_prototype_errors_loop, features, labels, trials=loop_trials, **common
    )
    loop_total = loop_s * trials / loop_trials
    print(
        f"per-pair loop, {loop_trials} trials (measured): {loop_s:9.3f} s  "
        f"({n_classes * (n_classes - 1)} pairs per trial)"
    )
    print(
        f"per-pair loop, {trials} trials (extrapolated ×{trials / loop_trials:g}): "
        f"{loop_total:9.3f} s"
    )
    ratio = loop_total / fast_s
    print(f"speed-up: {ratio:.1f}× (goal >= 100×: {'met' if ratio >= 100 else 'NOT met'})")

    same = pairwise_prototype_errors(features, labels, trials=loop_trials, device=device, **common)
    print(
        f"agreement on the same {loop_trials} trials: max |vectorised - loop| = "
        f"{np.abs(same - slow).max():.2e}; mean off-diagonal error {mean_offdiagonal(fast):.4f}"
    )


if __name__ == "__main__":
    main()
