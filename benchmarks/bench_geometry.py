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
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from ssltrace.analysis.geometry import cdnv, mean_class_distance, ncc_accuracy
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


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_layer(dim: int, repeats: int, backends: list[str], rng) -> dict[str, float]:
    out = {}
    for level, (tx, ty, vx, vy) in levels(dim, rng).items():
        out[f"{level}/ncc"] = timed(lambda: ncc_accuracy(tx, ty, vx, vy, "cpu"), repeats)
        out[f"{level}/cdnv+var+dist"] = timed(
            lambda: (cdnv(tx, ty, "cpu"), within_var(tx, ty, "cpu"), mean_class_distance(tx, ty)),
            repeats,
        )
        for kind in ("svm", "logistic"):
            for backend in backends:
                out[f"{level}/{kind}[{backend}]"] = timed(
                    lambda k=kind, b=backend: linear_probe(
                        tx, ty, vx, vy, kind=k, backend=b, device="cpu"
                    ),
                    repeats,
                )
    groups = np.repeat(np.arange(4), 24)
    x_now, x_prev = clustered(groups, dim, 0.5, rng), clustered(groups, dim, 0.5, rng)
    prev = compute_rdm(x_prev)
    out["rdm/compute"] = timed(lambda: compute_rdm(x_now), repeats)
    now = compute_rdm(x_now)
    out["rdm/spearman"] = timed(lambda: compare(now, prev, "spearman"), repeats)
    out["rdm/kendall_tau_a"] = timed(lambda: compare(now, prev, "kendall_tau_a"), repeats)
    names = ["people", "animals", "vehicles", "plants"]
    out["rdm/category"] = timed(lambda: category_dissimilarity(now, groups, names), repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, sklearn probes only")
    parser.add_argument("--epochs", type=int, default=201, help="checkpoints per run to project")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    backends = ["sklearn"] if args.quick else ["sklearn", "torch"]
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; repeats={repeats}")

    wall = time.perf_counter()
    per_layer = {name: bench_layer(dim, repeats, backends, rng) for name, dim in LAYERS.items()}
    analyses = list(next(iter(per_layer.values())))

    print(f"\nseconds per analysis and layer (median of {repeats})")
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
    print(f"\nbenchmark wall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
