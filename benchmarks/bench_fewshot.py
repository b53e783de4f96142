"""Vectorised pairwise m-shot prototype errors vs the per-pair reference loop.

Default size is the seed-000 scale: 50 classes × 600 samples × 512 dims, 100 trials, 5 shots.
The loop would take minutes at that size, so it runs a few trials and its time is
extrapolated linearly to all trials (its cost is the same for every trial); the printout
says so. Also timed: the plain float64 vectorised version (`mean_weights_float64`, one matrix
product per trial) that the fast path (float32 scores, float64 recheck of the rows float32
could decide wrongly) must equal exactly; the loop's result must equal it on the same few
trials. Peak memory of the fast path and of the float64 version is measured in fresh
processes (CUDA: the allocator's peak; CPU: the resident set sampled every millisecond),
above what the process holds before the call.

    python benchmarks/bench_fewshot.py                # full size
    python benchmarks/bench_fewshot.py --threads 1    # torch threads (default: torch's)
    python benchmarks/bench_fewshot.py --quick        # small, a few seconds
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time

import numpy as np
import torch

from ssltrace.analysis.fewshot import draw_shots, mean_offdiagonal, pairwise_prototype_errors
from ssltrace.analysis.fewshot_kernel import (
    errors_from_signs,
    mean_weights,
    mean_weights_float64,
    reference_pairwise_errors,
)
from ssltrace.device import resolve_device


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


def float64_errors(x, plan, distance, device):
    return errors_from_signs(mean_weights_float64(x, plan, distance, device, "sign"))


def loop_errors(features, labels, shots, trials, distance):
    """The per-pair loop, drawing its shots like `pairwise_prototype_errors` (timed alike)."""
    return reference_pairwise_errors(features, draw_shots(labels, shots, trials), distance)


def peak_memory_mib(path: str, size: tuple, shots: int, distance: str, device, threads) -> float:
    """Peak memory (MiB) of one run of the fast path ('fast') or the float64 version, in a
    fresh process: memory the allocator kept from earlier runs would hide part of it."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        job = (path, size, shots, distance, str(device), threads)
        return pool.apply(_peak_memory_job, job)


def _peak_memory_job(path, size, shots, distance, device, threads) -> float:
    if threads:
        torch.set_num_threads(threads)
    n_classes, per_class, dim, trials = size
    features, labels = make_features(n_classes, per_class, dim)
    x, plan, device = (
        torch.as_tensor(features),
        draw_shots(labels, shots, trials),
        torch.device(device),
    )
    run = mean_weights if path == "fast" else mean_weights_float64
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run(x, plan, distance, device, "sign")
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return float("nan")
    before = _resident_bytes()
    peak, done = [before], threading.Event()

    def sample():
        while not done.wait(0.001):
            peak[0] = max(peak[0], _resident_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run(x, plan, distance, device, "sign")
    finally:
        done.set()
        sampler.join()
    return (max(peak[0], _resident_bytes()) - before) / 2**20


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def parse_args() -> argparse.Namespace:
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
    default = (10, 100, 64, 20) if args.quick else (50, 600, 512, 100)
    given = (args.classes, args.per_class, args.dim, args.trials)
    args.size = tuple(g or d for g, d in zip(given, default, strict=True))
    args.loop_trials = min(args.loop_trials or 2, args.size[3])
    args.device = resolve_device(args.device)
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_classes, per_class, dim, trials = args.size
    features, labels = make_features(n_classes, per_class, dim)
    print(
        f"{n_classes} classes × {per_class} samples × {dim} dims, {trials} trials, "
        f"m={args.shots}, {args.distance}; device {args.device}, torch threads "
        f"{torch.get_num_threads()}"
    )
    fast, fast_s = time_vectorised(features, labels, args)
    loop_s = time_loop(features, labels, args)
    ratio = loop_s * trials / args.loop_trials / fast_s
    print(f"speed-up: {ratio:.1f}× (goal >= 100×: {'met' if ratio >= 100 else 'NOT met'})")
    print(f"mean off-diagonal error {mean_offdiagonal(fast):.4f}")
    memory = [
        peak_memory_mib(path, args.size, args.shots, args.distance, args.device, args.threads)
        for path in ("fast", "float64")
    ]
    print(
        f"peak memory above the inputs, {trials} trials: fast path {memory[0]:.1f} MiB, "
        f"float64 version {memory[1]:.1f} MiB"
    )


def time_vectorised(features, labels, args) -> tuple[np.ndarray, float]:
    """Time the fast path and the float64 version on all trials; their results must be equal."""
    trials, common = args.size[3], dict(shots=args.shots, distance=args.distance, seed=0)
    pairwise_prototype_errors(features, labels, trials=1, device=args.device, **common)  # warm-up
    fast, fast_s = timed(
        pairwise_prototype_errors, features, labels, trials=trials, device=args.device, **common
    )
    plan = draw_shots(labels, args.shots, trials, seed=0)
    x = torch.as_tensor(features)
    stats = {}
    mean_weights(x, plan, args.distance, args.device, "sign", stats=stats)
    print(
        f"vectorised (float32 + recheck), {trials} trials: {fast_s:9.3f} s  "
        f"(rows rechecked in float64: {stats['rechecked']} of {stats['rows']}, "
        f"{stats['rechecked'] / stats['rows']:.2%})"
    )
    reference, reference_s = timed(float64_errors, x, plan, args.distance, args.device)
    print(
        f"vectorised float64 (reference), {trials} trials: {reference_s:9.3f} s  "
        f"(identical result: {np.array_equal(fast, reference)}; "
        f"fast path {reference_s / fast_s:.2f}× faster)"
    )
    return fast, fast_s


def time_loop(features, labels, args) -> float:
    """Time the per-pair loop on the first few trials; its result must equal the fast path's
    on the same shots. Returns the measured seconds."""
    n_classes, trials, loop_trials = args.size[0], args.size[3], args.loop_trials
    slow, loop_s = timed(loop_errors, features, labels, args.shots, loop_trials, args.distance)
    print(
        f"per-pair loop, {loop_trials} trials (measured): {loop_s:9.3f} s  "
        f"({n_classes * (n_classes - 1)} pairs per trial)"
    )
    if loop_trials < trials:
        print(
            f"per-pair loop, {trials} trials (extrapolated ×{trials / loop_trials:g}): "
            f"{loop_s * trials / loop_trials:9.3f} s"
        )
    loop_plan = draw_shots(labels, args.shots, loop_trials)  # the loop's shots
    same = pairwise_prototype_errors(
        features, plan=loop_plan, distance=args.distance, device=args.device
    )
    print(
        f"agreement on the same {loop_trials} trials: max |vectorised - loop| = "
        f"{np.abs(same - slow).max():.2e}"
    )
    return loop_s


if __name__ == "__main__":
    main()
