"""Time the per-checkpoint analyses of seed papers 001 (RDM trajectory) and 004 (geometry).

One checkpoint = every layer of a ResNet-18-like backbone (pooled widths 64, 64, 128, 256,
512, 512, 512) at three label levels plus the 96-image RDM. Features are synthetic but shaped
like pooled ReLU activations (clustered, non-negative), at a small-paper probe size:

    fine    50 classes × 20 train + 10 test images
    coarse  10 classes, the same images
    sample  N=100 source images × K=20 train / K'=5 test views (100 classes)
    rdm     96 images: correlation RDM, Spearman and Kendall τ-a against the previous epoch,
            category dissimilarity of 4 groups

Prints the median time of each analysis per layer, the total per checkpoint, and what that
means for epochs × layers; the baseline for the probe solvers is sklearn on CPU, measured in
the same run as the torch L-BFGS solver (also on CPU here; it is the one used on CUDA).

    python benchmarks/bench_geometry.py --quick     # < 2 min on a 2-core machine
    python benchmarks/bench_geometry.py --threads 1 --clock cpu   # steady on a shared machine
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from functools import partial

import numpy as np
import torch

from ssltrace.analysis.geometry import cdnv, mean_class_distance, ncc_accuracy, sample_level_sets
from ssltrace.analysis.geometry import within_class_variance as within_var
from ssltrace.analysis.probes import linear_probe
from ssltrace.analysis.rdm import compare, compute_rdm
from ssltrace.analysis.trajectory import category_dissimilarity

LAYERS = {"conv1": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
LAYERS |= {"pool": 512, "fc1": 512}


def clustered(labels: np.ndarray, dim: int, separation: float, rng) -> np.ndarray:
    """Non-negative clustered features: ReLU(class centre + noise), float32."""
    centres = separation * rng.normal(size=(labels.max() + 1, dim))
    x = centres[labels] + rng.normal(size=(labels.size, dim))
    return np.maximum(x, 0).astype(np.float32)


def levels(dim: int, rng) -> dict[str, tuple]:
    fine = np.repeat(np.arange(50), 30)
    x_fine = clustered(fine, dim, 0.5, rng)
    is_train = np.tile(np.arange(30) < 20, 50)
    coarse = fine // 5
    sources = np.repeat(np.arange(100), 25)
    x_sample = clustered(sources, dim, 0.8, rng)
    is_train_s = np.tile(np.arange(25) < 20, 100)
    return {
        "fine": (x_fine[is_train], fine[is_train], x_fine[~is_train], fine[~is_train]),
        "coarse": (x_fine[is_train], coarse[is_train], x_fine[~is_train], coarse[~is_train]),
        "sample": (
            x_sample[is_train_s],
            sources[is_train_s],
            x_sample[~is_train_s],
            sources[~is_train_s],
        ),
    }


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn, repeats: int, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return float(np.median(times))


def cluster_stats(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    return cdnv(x, y, "cpu"), within_var(x, y, "cpu"), mean_class_distance(x, y, "cpu")


def bench_layer(dim: int, repeats: int, backends: list[str], clock, rng) -> dict[str, float]:
    out = {}

    def timed_(fn) -> float:
        return timed(fn, repeats, clock)

    for level, (tx, ty, vx, vy) in levels(dim, rng).items():
        out[f"{level}/ncc"] = timed_(partial(ncc_accuracy, tx, ty, vx, vy, "cpu"))
        out[f"{level}/cdnv+var+dist"] = timed_(partial(cluster_stats, tx, ty))
        for kind in ("svm", "logistic"):
            for backend in backends:
                probe = partial(linear_probe, tx, ty, vx, vy, kind=kind, backend=backend)
                out[f"{level}/{kind}[{backend}]"] = timed_(partial(probe, device="cpu"))
    groups = np.repeat(np.arange(4), 24)
    x_now, x_prev = clustered(groups, dim, 0.5, rng), clustered(groups, dim, 0.5, rng)
    prev = compute_rdm(x_prev)
    out["rdm/compute"] = timed_(lambda: compute_rdm(x_now))
    now = compute_rdm(x_now)
    out["rdm/spearman"] = timed_(lambda: compare(now, prev, "spearman"))
    out["rdm/kendall_tau_a"] = timed_(lambda: compare(now, prev, "kendall_tau_a"))
    names = ["people", "animals", "vehicles", "plants"]
    out["rdm/category"] = timed_(lambda: category_dissimilarity(now, groups, names))
    return out


def bench_sample_sets(clock, quick: bool) -> None:
    """Drawing the sample-level image sets happens once per study, not per checkpoint."""
    from ssltrace.augment import Augmenter

    images = np.random.default_rng(1).integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
    sizes = ((100, 20, 5),) if quick else ((100, 20, 5), (500, 100, 20))
    for n, k, k_test in sizes:
        start = clock()
        sample_level_sets(images, n, k, k_test, Augmenter(None, "cpu"), device="cpu")
        print(
            f"sample_level_sets N={n} K={k} K'={k_test} (CPU, once per study): "
            f"{clock() - start:.1f} s"
        )


def warm_up(backends: list[str]) -> None:
    """First calls import sklearn and torch.optim machinery (seconds); keep it out of the table."""
    x = np.random.default_rng(0).random((20, 4))
    y = np.arange(20) % 2
    for backend in backends:
        linear_probe(x, y, x, y, backend=backend, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, sklearn probes only, small sample sets"
    )
    parser.add_argument("--epochs", type=int, default=201, help="checkpoints per run to project")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="wall",
        help="'cpu' (process time) is steadier on a shared machine; use it with --threads 1",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    backends = ["sklearn"] if args.quick else ["sklearn", "torch"]
    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; repeats={repeats}; "
        f"{args.clock} clock"
    )
    warm_up(backends)

    wall = time.perf_counter()
    clock = CLOCK[args.clock]
    per_layer = {
        name: bench_layer(dim, repeats, backends, clock, rng) for name, dim in LAYERS.items()
    }
    analyses = list(next(iter(per_layer.values())))

    print(f"\n{args.clock}-clock seconds per analysis and layer (median of {repeats})")
    header = f"{'analysis':<26}" + "".join(f"{n:>9}" for n in LAYERS) + f"{'all':>9}"
    print(header)
    totals: dict[str, float] = defaultdict(float)
    for analysis in analyses:
        row = [per_layer[layer][analysis] for layer in LAYERS]
        totals[analysis] = sum(row)
        print(f"{analysis:<26}" + "".join(f"{t:9.3f}" for t in row) + f"{sum(row):9.3f}")

    for backend in backends:
        used = [a for a in analyses if "[" not in a or f"[{backend}]" in a]
        checkpoint = sum(totals[a] for a in used)
        print(
            f"\nprobes on {backend}: {checkpoint:.2f} s per checkpoint ({len(LAYERS)} layers); "
            f"{checkpoint * args.epochs / 60:.1f} min per run of {args.epochs} checkpoints"
        )
        share: dict[str, float] = defaultdict(float)
        for a in used:
            share[a.split("/")[1].split("[")[0]] += totals[a] / checkpoint
        ranked = sorted(share.items(), key=lambda kv: -kv[1])
        print("  share: " + ", ".join(f"{k} {v:.0%}" for k, v in ranked))
    if "torch" in backends:
        for kind in ("svm", "logistic"):
            base = sum(totals[a] for a in analyses if f"{kind}[sklearn]" in a)
            new = sum(totals[a] for a in analyses if f"{kind}[torch]" in a)
            print(f"{kind}: torch L-BFGS (CPU) / sklearn = {new / base:.2f}x time")
    bench_sample_sets(clock, args.quick)
    print(f"\nbenchmark wall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
