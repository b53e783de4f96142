"""Extraction memory at 224 px: the all-in-memory path against the streamed one (issue 19).

A torchvision ResNet-18 at 224 x 224 (`resnet18_imagenet`) is extracted for N probe images
with full spatial maps (`flatten`, no projection: 577k values per image over its six
layers, 2.3 MB in float32). The old path collected every layer of every image in memory,
concatenated it and wrote the file (`extract.activations` + `io.save_npz`); the streamed
path (`extract.extract_many`, what the workflow runs) appends each batch to one raw file per
layer and copies those into the .npz. Each path runs in its own process, so that its peak
resident memory (ru_maxrss) is its own; printed with the RSS before extraction (Python,
torch, the probe images), the growth over it, s/image and the ratios.

    python benchmarks/bench_extract.py [--images 48] [--batch-size 16] [--dtype float32]
        [--pooling flatten] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARCH = {"name": "resnet18_imagenet"}


def rss_mb() -> float:
    """Resident memory now (MB), from /proc."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KB on Linux


def prepare(folder: Path, n_images: int) -> None:
    import torch

    from ssltrace import io
    from ssltrace.network import build_network

    torch.manual_seed(0)
    net = build_network(ARCH, "simclr", {}, n_classes=10)
    io.torch_save(
        folder / "epoch_000.pt",
        {
            "format": "ssltrace-checkpoint/1",
            "method": "simclr",
            "seed": 0,
            "epoch": 0,
            "architecture": ARCH,
            "method_params": {},
            "n_classes": 10,
            "state_dict": net.state_dict(),
        },
    )
    rng = np.random.default_rng(0)
    io.save_npz(
        folder / "probe.npz",
        {
            "images": rng.integers(0, 256, (n_images, 224, 224, 3), dtype=np.uint8),
            "labels": np.arange(n_images) % 10,
            "coarse": np.arange(n_images) % 2,
            "class_names": np.array([f"c{i}" for i in range(10)]),
            "coarse_names": np.array(["a", "b"]),
        },
    )


def old_path(folder: Path, args) -> None:
    """What extract_many did before streaming: all layers of all images in memory."""
    import torch

    from ssltrace import io
    from ssltrace.extract import activations
    from ssltrace.network import load_network

    probe = io.load_npz(folder / "probe.npz")
    net, ckpt = load_network(folder / "epoch_000.pt", torch.device(args.device))
    names = list(net.layer_modules())
    shapes: dict = {}
    acts = activations(net, probe["images"], names, args.pooling, args.batch_size, None, shapes)
    io.save_npz(
        folder / "old.npz",
        {
            **{layer: value.astype(args.dtype) for layer, value in acts.items()},
            **{f"shape_{layer}": np.array(shapes[layer]) for layer in names},
            "layers": np.array(names),
            "labels": probe["labels"],
        },
    )


def streamed_path(folder: Path, args) -> None:
    from ssltrace.extract import extract_many

    extract_many(
        [folder / "epoch_000.pt"],
        {"rdm": folder / "probe.npz"},
        {"rdm": [folder / "streamed.npz"]},
        pooling=args.pooling,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        projection_dim=None,
        log=lambda _: None,
    )


def worker(args) -> None:
    import torch

    from ssltrace import extract, io, network  # noqa: F401  (imports are not extraction)
    from ssltrace.methods import METHODS

    METHODS.get("simclr")  # register the methods, as loading a checkpoint does
    folder = Path(args.folder)
    io.load_npz(folder / "probe.npz")  # page in what both paths read
    before = rss_mb()
    start = time.perf_counter()
    (old_path if args.worker == "old" else streamed_path)(folder, args)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 1e6 if torch.cuda.is_available() else None
    print(json.dumps({"before": before, "peak": peak_mb(), "seconds": seconds, "gpu": gpu}))


def run(path: str, args, folder: Path) -> dict:
    command = [sys.executable, __file__, "--worker", path, "--folder", str(folder)]
    for key in ("images", "batch_size", "dtype", "pooling", "device"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--pooling", default="flatten")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=["old", "streamed"])
    parser.add_argument("--folder")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args.images)
        found = {path: run(path, args, folder) for path in ("old", "streamed")}
        size = (folder / "streamed.npz").stat().st_size / 1e6
        same = (folder / "old.npz").stat().st_size > 0
    print(
        f"resnet18_imagenet, {args.images} images at 224 px, {args.pooling}, {args.dtype}, "
        f"batch {args.batch_size}, {args.device}; activation file {size:.0f} MB"
    )
    print(f"{'path':10s} {'RSS before':>11s} {'peak RSS':>9s} {'growth':>8s} {'s/image':>8s}")
    for path, r in found.items():
        growth = r["peak"] - r["before"]
        gpu = f"  GPU peak {r['gpu']:.0f} MB" if r["gpu"] is not None else ""
        print(
            f"{path:10s} {r['before']:9.0f} MB {r['peak']:6.0f} MB {growth:5.0f} MB "
            f"{r['seconds'] / args.images:8.3f}{gpu}"
        )
    old, new = found["old"], found["streamed"]
    print(
        f"old/streamed: peak RSS {old['peak'] / new['peak']:.2f}x, growth "
        f"{(old['peak'] - old['before']) / max(new['peak'] - new['before'], 1e-9):.2f}x, "
        f"time {old['seconds'] / new['seconds']:.2f}x" + ("" if same else " (old file empty!)")
    )


if __name__ == "__main__":
    main()
