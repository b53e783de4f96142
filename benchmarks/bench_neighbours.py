"""Time weighted kNN + neighbour quality (seed 003 Fig. 1b-c) against scikit-learn.

One checkpoint = every layer of a ResNet-18 (pooled widths 64, 64, 128, 256, 512, 512, 512)
on a known-class probe of 10,000 images (100 classes x 67 train + 33 test; synthetic
clustered, non-negative features). Per layer: weighted kNN (K=100, tau=0.07; bank = train
part, queries = test part) and 10-neighbour quality over all images. The baseline is
scikit-learn in the same run: KNeighborsClassifier (brute force, cosine, the same weights
exp((1 - d) / tau) as a callable) and NearestNeighbors (11 neighbours, the first being the
image itself). Each side runs in its own process, so that its peak resident memory
(ru_maxrss) is its own; on CUDA the GPU peak (max_memory_allocated) is printed too.

    python benchmarks/bench_neighbours.py                # 10,000 images, all layers
    python benchmarks/bench_neighbours.py --images 3000  # quicker
    python benchmarks/bench_neighbours.py --extra        # + the analysis's call with the
        # ranked curve, and the bare similarity products (the floor both sides share)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

WIDTHS = {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
WIDTHS |= {"pool": 512, "head_fc1": 512}


def features(n_images: int, seed: int = 0):
    """{layer: float32 [n, d]}, labels, train mask."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(100), -(-n_images // 100))[:n_images]
    train = (np.arange(n_images) % (-(-n_images // 100))) < 0.67 * (n_images / 100)
    out = {}
    for layer, dim in WIDTHS.items():
        centres = 0.6 * np.sqrt(64 / dim) * rng.normal(size=(100, dim))  # mid-range accuracy
        out[layer] = np.maximum(centres[labels] + rng.normal(size=(n_images, dim)), 0)
        out[layer] = out[layer].astype(np.float32)
    return out, labels, train


def ours(feats, labels, train, device):
    """`neighbour_measures` per layer: kNN and quality from one pass over the upper triangle
    of the similarity matrix (the analysis adds the ranked curve: `--ranked`)."""
    import torch

    from ssltrace.analysis.neighbours import neighbour_measures

    results = {}
    for layer, x in feats.items():
        found = neighbour_measures(x, labels, train, ~train, 100, 0.07, 10, device=device)
        results[layer] = (found.knn_accuracy, found.quality)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return results


def ours_ranked(feats, labels, train, device):
    """The analysis's own call: as `ours` plus the ranked curve (whole rows, sorted)."""
    from ssltrace.analysis.neighbours import neighbour_measures, rank_grid

    ranks = rank_grid(len(labels) - 1, 256)
    results = {}
    for layer, x in feats.items():
        found = neighbour_measures(x, labels, train, ~train, 100, 0.07, 10, ranks, device=device)
        results[layer] = (found.knn_accuracy, found.quality)
    return results


def products(feats, labels, train, device):
    """The floor both sides share: every similarity product once (whole n x n matrix in
    [2048, n] chunks), nothing else; results are (0, 0)."""
    import torch

    results = {}
    for layer, x in feats.items():
        unit = torch.nn.functional.normalize(torch.from_numpy(x).to(device), dim=1)
        for start in range(0, len(unit), 2048):
            unit[start : start + 2048] @ unit.T
        results[layer] = (0.0, 0.0)
    return results


def sklearn(feats, labels, train, device):
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    results = {}
    for layer, x in feats.items():
        clf = KNeighborsClassifier(
            n_neighbors=100,
            metric="cosine",
            algorithm="brute",
            weights=lambda d: np.exp((1 - d) / 0.07),
        )
        knn = np.mean(clf.fit(x[train], labels[train]).predict(x[~train]) == labels[~train])
        idx = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(x)
        idx = idx.kneighbors(x, return_distance=False)[:, 1:]
        results[layer] = (float(knn), float(np.mean(labels[idx] == labels[:, None])))
    return results


def child(which: str, n_images: int, device: str, threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # BLAS of scikit-learn / numpy
    torch.set_num_threads(threads)
    feats, labels, train = features(n_images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if which != "sklearn":  # warm-up: first torch call, CUDA context
        ours({"stem": feats["stem"][:500]}, labels[:500], train[:500], device)
    start, cpu = time.perf_counter(), time.process_time()
    runs = {"ours": ours, "sklearn": sklearn, "ranked": ours_ranked, "products": products}
    results = runs[which](feats, labels, train, device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = None
    if which == "ours" and device.startswith("cuda"):
        import torch

        gpu = torch.cuda.max_memory_allocated() / 2**20
    report = {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak / 1024}
    report["rss_before_mb"] = before / 1024
    print(json.dumps({**report, "gpu_peak_mb": gpu, "results": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each side")
    parser.add_argument("--child", choices=["ours", "sklearn", "ranked", "products"])
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also time the analysis's call (with the ranked curve) and the bare products",
    )
    args = parser.parse_args()
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        child(args.child, args.images, device, args.threads)
        return
    found = {}
    sides = ("ours", "sklearn") + (("ranked", "products") if args.extra else ())
    for which in sides:
        cmd = [sys.executable, __file__, "--child", which, "--images", str(args.images)]
        cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd + ["--device", device], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        found[which] = json.loads(out.stdout.strip().splitlines()[-1])
    for layer in WIDTHS:
        a, b = found["ours"]["results"][layer], found["sklearn"]["results"][layer]
        print(f"{layer:9s} knn {a[0]:.4f} (sklearn {b[0]:.4f})  quality {a[1]:.4f} ({b[1]:.4f})")
    n_layers = len(WIDTHS)
    for which, r in found.items():
        gpu = f", GPU peak {r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] else ""
        print(
            f"{which:8s} {r['seconds']:7.2f} s ({r['cpu_seconds']:.1f} CPU s) for "
            f"{args.images} images x {n_layers} layers "
            f"({'cpu' if which == 'sklearn' else device}); peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(data alone {r['rss_before_mb']:.0f} MB){gpu}"
        )
    print(f"speed-up {found['sklearn']['seconds'] / found['ours']['seconds']:.1f}x", end=" ")
    print(f"(CPU time {found['sklearn']['cpu_seconds'] / found['ours']['cpu_seconds']:.1f}x)")


if __name__ == "__main__":
    main()
